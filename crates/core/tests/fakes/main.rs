//! The tier on fakes for ntd-core: machines, the driver and the run's policy against ntd-fake's
//! QEMU (which speaks QMP, the monitor, the serial console and the backdoor shell for real, and
//! misbehaves on request), a fake container written against the public `Backend` trait, and
//! real `vde_switch`es. No VM boots; the whole binary runs in seconds.
//!
//! It needs the `ntd-fake-qemu` binary (`cargo test --workspace` builds it), bash, util-linux
//! (`unshare`, `nsenter`), vde2, and root for the namespaces (as the VM tests do).

mod channel;
mod container;
mod driver;
mod qemu_machine;
mod shared;
mod support;
