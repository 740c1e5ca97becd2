fn main() {
    println!("chordphone");
}
