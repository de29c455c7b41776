fn main() -> std::process::ExitCode {
    mmharness::ui::cli::main()
}
