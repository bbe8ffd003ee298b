fn main() -> anyhow::Result<()> {
    provisioner::cli::main()
}
