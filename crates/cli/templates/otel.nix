# @name@: a NixOS test whose run is an OpenTelemetry trace, run by ntd.
#
#   nix-build . -I ntd=PATH-TO-NTD                      # run it in the sandbox (no export)
#   # The driver outside the sandbox, exporting to a local collector (Jaeger, Tempo, Alloy):
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \
#     $(nix-build . -A driver -I ntd=PATH-TO-NTD)/bin/nixos-test-driver
#
# Every subtest, boot phase and machine method becomes a span; commands in the guest get
# TRACEPARENT, so traced programs there join the trace.
{
  pkgs ? import <nixpkgs> { overlays = [ (import <ntd/driver-nix/overlay.nix>) ]; },
}:

pkgs.testers.runNixOSTest {
  name = "@name@";

  nodes.machine = {
    imports = [ ./hello.nix ];   # the service test.py checks
  };

  testScript = builtins.readFile ./test.py;
}
