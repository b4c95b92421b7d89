// Rust demangling test program (tests/test_demangle.py), built by rustc -O -g,
// once with the default (legacy) symbol mangling and once with v0.
//
// Prints "NAME 0xADDR" for the entry of a function in a nested module, an
// instance of a generic function, an associated constructor and a trait
// method, then "ready", and waits until stdin closes.
use std::io::Read;

mod mw {
    pub mod deep {
        #[inline(never)]
        pub fn make_buffer(n: usize) -> Vec<u8> {
            vec![7; n]
        }
    }

    pub struct Holder {
        pub data: Vec<u32>,
    }

    impl Holder {
        #[inline(never)]
        pub fn new(n: usize) -> Holder {
            Holder { data: vec![1; n] }
        }
    }

    impl Clone for Holder {
        #[inline(never)]
        fn clone(&self) -> Holder {
            Holder { data: self.data.clone() }
        }
    }

    #[inline(never)]
    pub fn make_array<T: Default + Clone>(n: usize) -> Vec<T> {
        vec![T::default(); n]
    }
}

/// Hides a value from the optimizer (std::hint::black_box needs Rust 1.66; Debian 12 has 1.63).
fn opaque<T: Copy>(value: T) -> T {
    unsafe { std::ptr::read_volatile(&value) }
}

fn main() {
    let namespaced: fn(usize) -> Vec<u8> = mw::deep::make_buffer;
    let generic: fn(usize) -> Vec<u64> = mw::make_array::<u64>;
    let constructor: fn(usize) -> mw::Holder = mw::Holder::new;
    let trait_method: fn(&mw::Holder) -> mw::Holder = <mw::Holder as Clone>::clone;
    let holder = opaque(constructor)(4);
    let total = opaque(namespaced)(8).len()
        + opaque(generic)(2).len()
        + opaque(trait_method)(&holder).data.len();
    println!("namespaced {:#x}", namespaced as usize);
    println!("generic {:#x}", generic as usize);
    println!("constructor {:#x}", constructor as usize);
    println!("trait_method {:#x}", trait_method as usize);
    println!("ready");
    let mut buf = [0u8; 16];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    std::process::exit(if total == 42 { 1 } else { 0 });
}
