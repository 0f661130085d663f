//! `mob`: talks to a running mob application's kingpin through its control
//! socket. `mob help` says how.

fn main() -> std::process::ExitCode {
    mob_ctl::main(std::env::args().skip(1).collect())
}
