//! The machine's network links, through the HMP monitor (upstream's `block`, `unblock`,
//! `forward_port`).

use super::QemuMachine;
use crate::machine::Result;

/// The QEMU device of the first VLAN NIC: NixOS puts the user-mode NIC first
/// (`virtio-net-pci.0`, eth0) and the VLAN NICs after it, and upstream hard-codes this name.
const FIRST_VLAN_NIC: &str = "virtio-net-pci.1";

impl QemuMachine {
    /// Upstream's `block()`: unplug the cable of the first VLAN NIC (eth1); eth0 stays up.
    pub async fn block(&self) -> Result<()> {
        self.send_monitor_command(&format!("set_link {FIRST_VLAN_NIC} off")).await.map(drop)
    }

    /// Upstream's `unblock()`: plug it back in.
    pub async fn unblock(&self) -> Result<()> {
        self.send_monitor_command(&format!("set_link {FIRST_VLAN_NIC} on")).await.map(drop)
    }

    /// Upstream's `forward_port(host_port=8080, guest_port=80)`: forward a TCP port of the
    /// host to the guest through the user-mode network.
    pub async fn forward_port(&self, host_port: u16, guest_port: u16) -> Result<()> {
        self.send_monitor_command(&format!("hostfwd_add tcp::{host_port}-:{guest_port}")).await.map(drop)
    }
}
