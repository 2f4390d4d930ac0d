//! The `#[task]` attribute of [tiger](https://docs.rs/tiger).
//!
//! Use it as `#[tiger::task]`: the `tiger` crate re-exports it and documents it. This crate
//! only parses the attribute ([`attr`](crate)) and generates code (`expand`); everything the
//! generated code calls lives in `tiger::__private`.

use proc_macro::TokenStream;

mod attr;
mod expand;

/// Turns a function into a tiger task. See `tiger::task` for the documentation.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into()).into()
}
