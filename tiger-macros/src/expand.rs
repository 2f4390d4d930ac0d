//! Generates the code behind `#[tiger::task]`.
//!
//! For `fn send(user: u64)` it keeps the function as written and adds, next to it:
//! - a hidden `TaskSpec` constant and a hidden `delay` function whose parameters are the
//!   task's own, so their types resolve exactly where the user wrote them;
//! - a module `send` that re-exports that function as `send::delay` and holds `send::NAME`;
//! - a registration (`inventory::submit!`) of a decoder that turns stored JSON arguments back
//!   into typed values and calls the function.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type, Visibility, spanned::Spanned};

use crate::attr::{TaskArgs, push_error};

/// One parameter of the task function.
struct Param {
    ident: Ident,
    ty: Type,
}

/// Entry point: on any error, emit the errors together with the untouched function so that
/// code calling it does not pile up follow-on errors.
pub(crate) fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(err) => {
            let err = syn::Error::new(err.span(), "`#[tiger::task]` goes on a function");
            return with_errors(item, err);
        }
    };
    let mut errors = None;
    let args = TaskArgs::parse(args).unwrap_or_else(|err| {
        push_error(&mut errors, err);
        TaskArgs::default()
    });
    let params = parameters(&func, &mut errors);
    if let Some(err) = errors {
        return with_errors(quote!(#func), err);
    }
    generate(&func, &args, &params)
}

fn with_errors(item: TokenStream, err: syn::Error) -> TokenStream {
    let errors = err.to_compile_error();
    quote!(#item #errors)
}

/// Checks the signature and returns the parameters, recording every misuse in `errors`.
fn parameters(func: &ItemFn, errors: &mut Option<syn::Error>) -> Vec<Param> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        push_error(
            errors,
            syn::Error::new(
                sig.generics.span(),
                "a task cannot be generic: the worker must know the concrete argument types",
            ),
        );
    }
    if let Some(variadic) = &sig.variadic {
        push_error(errors, syn::Error::new(variadic.span(), "a task cannot be variadic"));
    }
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => push_error(
                errors,
                syn::Error::new(
                    receiver.span(),
                    "a task cannot take `self`: make it a free function",
                ),
            ),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() => {
                    if let Type::ImplTrait(_) = &*typed.ty {
                        push_error(
                            errors,
                            syn::Error::new(
                                typed.ty.span(),
                                "a task parameter needs a concrete type, not `impl Trait`",
                            ),
                        );
                    }
                    params.push(Param { ident: pat.ident.clone(), ty: (*typed.ty).clone() });
                }
                other => push_error(
                    errors,
                    syn::Error::new(
                        other.span(),
                        "a task parameter must be a plain name (`user_id: u64`), \
                         because its name is its keyword in the stored task",
                    ),
                ),
            },
        }
    }
    params
}

fn generate(func: &ItemFn, args: &TaskArgs, params: &[Param]) -> TokenStream {
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let fn_name = ident.to_string();
    let spec = format_ident!("__TIGER_SPEC_{}", ident);
    let delay = format_ident!("__tiger_delay_{}", ident);
    let reexport_vis = reexport_visibility(vis);

    let name = match &args.name {
        Some(name) => quote!(#name),
        None => quote!(::core::concat!(::core::module_path!(), ":", #fn_name)),
    };
    let queue = match &args.queue {
        Some(queue) => quote!(::core::option::Option::Some(#queue)),
        None => quote!(::core::option::Option::None),
    };

    let idents: Vec<&Ident> = params.iter().map(|p| &p.ident).collect();
    let types: Vec<&Type> = params.iter().map(|p| &p.ty).collect();
    let arg_checks = types.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            ::tiger::__private::assert_task_arg::<#ty>();
        }
    });
    let indexes = 0..params.len();
    let names: Vec<String> = params.iter().map(|p| p.ident.to_string()).collect();
    let body = call_body(func);

    let module_doc = format!(
        "Enqueue the task [`{fn_name}()`]: `{fn_name}::delay(...)` takes the same arguments, \
         returns a [`Delay`](::tiger::Delay) to set per-call options on, and enqueues when \
         awaited."
    );
    let delay_doc = format!(
        "Enqueues a call of [`{fn_name}()`](fn@super::{fn_name}) with these arguments when the \
         returned [`Delay`](::tiger::Delay) is awaited."
    );

    quote! {
        #func

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #spec: ::tiger::__private::TaskSpec = ::tiger::__private::TaskSpec {
            name: #name,
            queue: #queue,
        };

        #[doc(hidden)]
        #[allow(non_snake_case, clippy::too_many_arguments)]
        #vis fn #delay(#(#idents: #types),*) -> ::tiger::Delay {
            ::tiger::Delay::new(
                &#spec,
                ::tiger::__private::ArgsWriter::new()#(.arg(&#idents))*.finish(),
            )
        }

        #[doc = #module_doc]
        #vis mod #ident {
            #[doc = #delay_doc]
            #reexport_vis use super::#delay as delay;

            /// The serialized name the worker looks this task up by.
            pub const NAME: &str = super::#spec.name;
        }

        const _: () = {
            const _: fn() = || {
                #(#arg_checks)*
            };

            fn __tiger_call(
                args: &::tiger::__private::Args<'_>,
            ) -> ::core::result::Result<::tiger::__private::Body, ::tiger::__private::ArgError> {
                args.check(&[#(#names),*])?;
                #(let #idents: #types = args.get(#indexes, #names)?;)*
                ::core::result::Result::Ok(#body)
            }

            ::tiger::__private::inventory::submit! {
                ::tiger::__private::TaskEntry {
                    spec: &#spec,
                    file: ::core::file!(),
                    line: ::core::line!(),
                    call: __tiger_call,
                }
            }
        };
    }
}

/// The expression that runs the function: a future for `async fn`, a closure for `fn`.
fn call_body(func: &ItemFn) -> TokenStream {
    let ident = &func.sig.ident;
    let idents = func.sig.inputs.iter().filter_map(|input| match input {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(pat) => Some(&pat.ident),
            _ => None,
        },
        FnArg::Receiver(_) => None,
    });
    let output_span = match &func.sig.output {
        ReturnType::Default => func.sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let sig_span = func.sig.span();
    if func.sig.asyncness.is_some() {
        let outcome = quote_spanned!(output_span=> ::tiger::__private::outcome(#ident(#(#idents),*).await));
        quote_spanned!(sig_span=> ::tiger::__private::Body::future(async move { #outcome }))
    } else {
        let outcome = quote_spanned!(output_span=> ::tiger::__private::outcome(#ident(#(#idents),*)));
        quote_spanned!(sig_span=> ::tiger::__private::Body::blocking(move || #outcome))
    }
}

/// The visibility for `use super::hidden as delay` inside the generated module, so that
/// `task::delay` is exactly as visible as the task function itself.
fn reexport_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Public(_) => quote!(pub),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(restricted) => {
            let path = &restricted.path;
            let first = path.segments.first().map(|s| s.ident.to_string());
            match first.as_deref() {
                Some("crate") => quote!(#vis),
                Some("self") if path.segments.len() == 1 => quote!(pub(super)),
                Some("super") | Some("self") => {
                    let rest = path.segments.iter().skip(usize::from(first.as_deref() == Some("self")));
                    quote!(pub(in super::#(#rest)::*))
                }
                _ => quote!(#vis),
            }
        }
    }
}
