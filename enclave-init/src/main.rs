fn main() {
    enclave_init::cli::main_from(std::env::args_os())
}
