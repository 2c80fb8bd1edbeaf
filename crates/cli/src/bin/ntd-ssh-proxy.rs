//! `ntd-ssh-proxy HOST PORT`: the ssh `ProxyCommand` of ntd's SSH backdoor configuration,
//! for hosts whose systemd-ssh-proxy(1) does not know `vsock-mux/` (it came in systemd 258).
//! `HOST` is `vsock-mux/<vhost-device-vsock host socket>` or `unix/<socket>`; see
//! `ntd_core::ssh_backdoor::proxy`.

use ntd_core::ssh_backdoor::proxy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port] = args.as_slice() else {
        eprintln!("usage: ntd-ssh-proxy vsock-mux/<socket>|unix/<socket> <port>   (an ssh ProxyCommand: %n %p)");
        std::process::exit(2);
    };
    let connected = proxy::parse_port(port)
        .and_then(|port| Ok((proxy::Address::parse(host)?, port)))
        .and_then(|(address, port)| proxy::connect(&address, port))
        .and_then(proxy::hand_over);
    if let Err(e) = connected {
        eprintln!("ntd-ssh-proxy: {e}");
        std::process::exit(1);
    }
}
