//! The SSH backdoor: a root shell in a running test machine over vsock, for debugging a test
//! (nixpkgs' `sshBackdoor.enable`, on by default with `enableDebugHook`).
//!
//! The guest side is the guest's business: NixOS's sshd listens on vsock port 22 through
//! systemd-ssh-generator, and lets root in without a password. The driver's side, as upstream's
//! newest driver does it:
//! - one [`VHostDeviceVsock`] serves every VM of the configuration ([`vsock`]); each VM gets a
//!   `vhost-user-vsock-pci` device on its guest socket (upstream's QEMU arguments);
//! - [`listing()`] is upstream's `dump_machine_ssh()`: what to type for each machine,
//!   `ssh -o User=root vsock-mux/<host socket>` for a VM. That needs an ssh whose
//!   configuration sends `vsock-mux/` addresses through systemd-ssh-proxy(1), 258 or newer.
//!
//! What ntd adds, where that proxy is missing (Debian 12 has systemd 252; no proxy before 256,
//! no `vsock-mux/` before 258): its own proxy, `ntd-ssh-proxy` ([`proxy`]), and an ssh
//! configuration using it next to the sockets ([`ssh_config()`]). The listing then gives each
//! VM a second line, `ssh -F <that file> -o User=root vsock-mux/<host socket>`, which works on
//! any host with an ssh client.

mod listing;
pub mod proxy;
mod ssh_config;
pub mod vsock;

pub use listing::{Access, WhyOwnProxy, legacy_listing, listing, vm_command, vm_command_with_config};
pub use ssh_config::{SSH_CONFIG, host_ssh_proxies_vsock_mux, ssh_config, write_ssh_config};
pub use vsock::{VHostDeviceVsock, VsockPair};
