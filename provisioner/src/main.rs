fn main() -> std::process::ExitCode {
    provisioner::cli::main()
}
