# The service the test script talks to (ntd's built-in test guest has the same one): a line
# of text, "hello from <host name>", on TCP port 8080.
{ config, pkgs, ... }:
{
  systemd.services.hello = {
    wantedBy = [ "multi-user.target" ];
    path = [ pkgs.netcat-openbsd ];
    script = ''
      while true; do
        echo "hello from ${config.networking.hostName}" | nc -l -N -p 8080 >/dev/null
      done
    '';
  };
  networking.firewall.allowedTCPPorts = [ 8080 ];
}
