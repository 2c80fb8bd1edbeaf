//! `nixos-test-driver new NAME --template T`: write a ready test directory. Its `default.nix`
//! is a `runNixOSTest` test that runs on ntd through the overlay, its `test.py` the test
//! script, and its `machines` the same machines on the built-in test guest, so that
//! `scripts/run-example DIR` runs the script here at once, without Nix.
//!
//! The test scripts are the examples' (`examples/`), which the end-to-end tests run; the Nix
//! files are in `templates/`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Write a new NixOS test directory from a template.
#[derive(Debug, Parser)]
#[command(name = "nixos-test-driver new", max_term_width = 100)]
pub struct NewArgs {
    /// The test's name; also the directory to create (in --dir).
    #[arg(value_name = "NAME")]
    pub name: String,

    /// What the test starts from.
    #[arg(long, value_enum, default_value_t = Template::Minimal)]
    pub template: Template,

    /// Where to create the test's directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// The templates, each a NixOS test with a matching script for the built-in guest.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Template {
    /// One machine: wait for a service, run commands (examples/minimal).
    Minimal,
    /// A server and a client on a VLAN, and a partition (examples/multi-machine).
    MultiMachine,
    /// The screen: OCR, typing, screenshots (examples/screen).
    Graphical,
    /// A run exported as an OpenTelemetry trace (examples/otel).
    Otel,
}

/// The files of one template.
struct Files {
    nix: &'static str,
    test_script: &'static str,
    machines: &'static str,
}

impl Files {
    /// Whether `default.nix` imports `hello.nix`, the service the script talks to.
    fn uses_hello_service(&self) -> bool {
        self.nix.contains("./hello.nix")
    }
}

/// The NixOS module of the service several templates' scripts talk to.
const HELLO_SERVICE: &str = include_str!("../templates/hello.nix");

impl Template {
    fn files(self) -> Files {
        match self {
            Template::Minimal => Files {
                nix: include_str!("../templates/minimal.nix"),
                test_script: include_str!("../../../examples/minimal/test.py"),
                machines: include_str!("../../../examples/minimal/machines"),
            },
            Template::MultiMachine => Files {
                nix: include_str!("../templates/multi-machine.nix"),
                test_script: include_str!("../../../examples/multi-machine/test.py"),
                machines: include_str!("../../../examples/multi-machine/machines"),
            },
            Template::Graphical => Files {
                nix: include_str!("../templates/graphical.nix"),
                test_script: include_str!("../../../examples/screen/test.py"),
                machines: include_str!("../../../examples/screen/machines"),
            },
            Template::Otel => Files {
                nix: include_str!("../templates/otel.nix"),
                test_script: include_str!("../../../examples/otel/test.py"),
                machines: include_str!("../../../examples/otel/machines"),
            },
        }
    }
}

/// A test name Nix accepts as (part of) a derivation name, and that is a directory name.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "+-._".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid test name {name:?}: use letters, digits and + - . _ (not first: . or -), as Nix \
             derivation names do"
        ))
    }
}

fn readme(name: &str, template: Template) -> String {
    let kind = template.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    format!(
        "# {name}\n\
         \n\
         A NixOS test from ntd's `{kind}` template.\n\
         \n\
         - `default.nix`: the test (`runNixOSTest`); its driver is ntd through ntd's overlay.\n\
         - `test.py`: the test script.\n\
         - `machines`: the same machines on ntd's built-in test guest (one per line, with\n\
         \x20 `tests/guest/mk-start-script` options).\n\
         \n\
         ```sh\n\
         nix-build . -I ntd=PATH-TO-NTD                                   # with Nix\n\
         $(nix-build . -A driverInteractive -I ntd=PATH-TO-NTD)/bin/nixos-test-driver   # the REPL\n\
         PATH-TO-NTD/scripts/run-example $PWD                             # here, on the built-in guest\n\
         ```\n"
    )
}

/// Write the test directory; return it and the names of the files written.
fn write(args: &NewArgs) -> Result<(PathBuf, Vec<&'static str>), String> {
    check_name(&args.name)?;
    let dir = args.dir.join(&args.name);
    if dir.exists() {
        return Err(format!("{} already exists; choose another name or --dir", dir.display()));
    }
    let files = args.template.files();
    let mut written = Vec::new();
    let mut write_file = |name: &'static str, contents: &str| -> Result<(), String> {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(name);
        Ok(())
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_file("default.nix", &files.nix.replace("@name@", &args.name))?;
    write_file("test.py", files.test_script)?;
    write_file("machines", files.machines)?;
    if files.uses_hello_service() {
        write_file("hello.nix", HELLO_SERVICE)?;
    }
    write_file("README.md", &readme(&args.name, args.template))?;
    Ok((dir, written))
}

/// `nixos-test-driver new ...`: `args` are the arguments after `new`.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let args = match NewArgs::try_parse_from(std::iter::once("nixos-test-driver new".into()).chain(args)) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { crate::exit::USAGE } else { crate::exit::SUCCESS };
        }
    };
    match write(&args) {
        Ok((dir, written)) => {
            println!("wrote {}: {}", dir.display(), written.join(", "));
            println!("run it here, on the built-in test guest: scripts/run-example {}", dir.display());
            crate::exit::SUCCESS
        }
        Err(message) => {
            eprintln!("nixos-test-driver new: error: {message}");
            crate::exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_nix_derivations() {
        assert!(check_name("my-feature_2.0+x").is_ok());
        for bad in ["", ".hidden", "-flag", "a b", "a/b", "caf\u{e9}", "x@y"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_template_names_the_test_and_reads_its_script() {
        for template in Template::value_variants() {
            let nix = template.files().nix;
            assert!(nix.contains("name = \"@name@\";"), "{template:?}");
            assert!(nix.contains("testScript = builtins.readFile ./test.py;"), "{template:?}");
        }
    }
}
