fn main() -> std::process::ExitCode {
    bidding_parent::cli::main_from(std::env::args_os(), bidding_parent::aws::Env::process())
}
