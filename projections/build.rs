fn main() {
    // The read-model migrations are embedded at build time: build again when one is added.
    println!("cargo:rerun-if-changed=../schema/migrations/sqlite-read");
}
