fn main() -> std::process::ExitCode {
    livekit_recorder::cli::main()
}
