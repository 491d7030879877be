fn main() {
    println!("ds4: under construction");
}
