fn main() {
    println!("conclave: under construction");
}
