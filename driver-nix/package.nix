# ntd as a Nix package, in place of nixpkgs' Python `nixos-test-driver`.
#
# It takes the arguments nixpkgs' test framework overrides the driver package with
# (`.override { enableOCR; extraPythonPackages; qemu_pkg; enableNspawn; enableRuntimeDeps; }`, see
# nixos/lib/testing/driver.nix) and provides what the framework runs:
#   bin/nixos-test-driver       the driver (Rust, with an embedded Python for the test script)
#   bin/generate-driver-symbols the globals a test script gets, for the pyflakes lint
#   bin/ntd-ssh-proxy           the SSH backdoor's ssh ProxyCommand, for hosts whose
#                               systemd-ssh-proxy has no vsock-mux/ (before systemd 258)
#   lib/python3.*/site-packages the `ntd` and `test_driver` packages with the native module,
#                               typed, so the framework's mypy check of test scripts works
{
  lib,
  python3Packages,
  rustPlatform,
  makeWrapper,
  coreutils,
  imagemagick_light,
  netpbm,
  novnc,
  socat,
  util-linux,
  vde2,
  vhost-device-vsock,
  systemd,
  tesseract,
  qemu_test,
  qemu_pkg ? qemu_test,
  enableOCR ? false,
  enableNspawn ? false,
  # Upstream's newest switch for the tools and REPL packages below (off for a lean build).
  enableRuntimeDeps ? true,
  extraPythonPackages ? (_: [ ]),
}:

let
  inherit (python3Packages) python;
  version = (lib.importTOML ../Cargo.toml).workspace.package.version;

  # On the driver's PATH, as upstream's nixos/lib/test-driver/default.nix puts them there (its
  # propagatedBuildInputs): QEMU (start scripts name their own binary, but upstream puts it on
  # PATH too), the VLAN switches (vde2, with vde_plug2tap for containers), socat for
  # shell_interact, coreutils and util-linux (nsenter, into containers), netpbm, and
  # vhost-device-vsock (the SSH backdoor's vsock devices, sshBackdoor.enable) always;
  # with containers (enableNspawn), systemd (journalctl follows a container's journal); with
  # OCR, ImageMagick (imagemagick_light) and tesseract (English only). ntd converts screenshots
  # and prepares OCR images itself, so it does not run netpbm or ImageMagick: they are there
  # for test scripts that call them, as they can under upstream's driver.
  runtimeTools =
    [
      qemu_pkg
      coreutils
    ]
    ++ lib.optionals enableRuntimeDeps [
      vde2
      socat
      util-linux
      netpbm
      vhost-device-vsock
    ]
    ++ lib.optionals enableNspawn [ systemd ]
    ++ lib.optionals enableOCR [
      imagemagick_light
      (tesseract.override { enableLanguages = [ "eng" ]; })
    ];

  # Importable from test scripts and by the type check; ptpython with IPython is the REPL
  # upstream embeds.
  pythonDependencies =
    lib.optionals enableRuntimeDeps [
      python3Packages.ptpython
      python3Packages.ipython
    ]
    ++ extraPythonPackages python3Packages;

  # The web view's VNC client (`--web-view`): ntd serves noVNC's files from here.
  webViewEnvironment = lib.optionalString enableRuntimeDeps "--set-default NTD_NOVNC ${novnc}/share/webapps/novnc";
in
python3Packages.buildPythonApplication {
  pname = "ntd";
  inherit version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      ../python-shim
    ];
  };

  cargoDeps = rustPlatform.importCargoLock { lockFile = ../Cargo.lock; };
  # maturin builds the wheel (ntd._native + the Python packages) from python-shim/.
  buildAndTestSubdir = "python-shim";

  nativeBuildInputs = [
    rustPlatform.cargoSetupHook
    rustPlatform.maturinBuildHook
    makeWrapper
  ];
  dependencies = pythonDependencies;

  # The binaries embed this Python (PYO3_PYTHON), so they are built here too, from the
  # same vendored crates.
  postBuild = ''
    PYO3_PYTHON=${python.interpreter} cargo build --release --offline --locked \
      --target-dir target/ntd-cli -p ntd-cli --bins
  '';

  # The binaries are not Python scripts: they get their own wrapper below.
  dontWrapPythonPrograms = true;
  postInstall = ''
    install -Dm755 target/ntd-cli/release/nixos-test-driver $out/bin/nixos-test-driver
    # Replaces the wheel's Python entry point of the same name.
    install -Dm755 target/ntd-cli/release/generate-driver-symbols $out/bin/generate-driver-symbols
    # Beside the driver, where it looks for it; ssh runs it, so it needs no wrapper.
    install -Dm755 target/ntd-cli/release/ntd-ssh-proxy $out/bin/ntd-ssh-proxy
    for program in nixos-test-driver generate-driver-symbols; do
      wrapProgram $out/bin/$program \
        --prefix PATH : ${lib.makeBinPath runtimeTools} \
        --prefix PYTHONPATH : ${python3Packages.makePythonPath pythonDependencies} \
        ${webViewEnvironment}
    done
  '';

  # The tests boot VMs (they need /dev/kvm or minutes of TCG, and root for the test
  # guest); the flake's `checks` run the unit tests and a NixOS test instead.
  doCheck = false;
  pythonImportsCheck = [
    "ntd"
    "test_driver.driver"
    "test_driver.machine"
  ];

  passthru = {
    inherit
      enableOCR
      enableNspawn
      qemu_pkg
      runtimeTools
      ;
  };

  meta = {
    description = "A native (Rust) NixOS test driver, compatible with nixos-test-driver";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "nixos-test-driver";
  };
}
