#[global_allocator]
static ALLOC: enclave_init::alloc::Prefaulting = enclave_init::alloc::Prefaulting;

fn main() {
    enclave_init::alloc::prefault_large_blocks();
    enclave_init::cli::main_from(std::env::args_os())
}
