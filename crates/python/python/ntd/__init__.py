"""ntd: a native (Rust) NixOS test driver.

`ntd._native` holds the machines, the driver and the logger, implemented in Rust;
`ntd.driver` runs test scripts with upstream's globals; `ntd.errors` has upstream's exceptions.
"""
