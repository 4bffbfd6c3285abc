fn main() -> std::process::ExitCode {
    chatledger_api::cli::main()
}
