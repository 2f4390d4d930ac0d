//! Generates the code behind `#[tiger::task]`.
//!
//! For `fn send(user: u64)` it keeps the function as written and adds, next to it:
//! - an empty braced struct `send` (braced structs live only in the type namespace, so it
//!   sits beside the function of the same name) whose impl holds `send::delay(user: u64)`,
//!   `send::NAME` and the hidden `send::SPEC`. Being in the same scope as the function, the
//!   parameter types resolve exactly as the user wrote them, even inside a function body;
//! - a registration (`inventory::submit!`) of a decoder that turns stored JSON arguments back
//!   into typed values and calls the function.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type, ext::IdentExt, spanned::Spanned};

use crate::attr::{RetryMethodArg, ScheduleArg, TaskArgs, push_error};

/// One parameter of a call of the task: the function's own, or for a `batch` task, one
/// element of the item type (named `arg0`, `arg1`, ...).
#[derive(Clone)]
struct Param {
    ident: Ident,
    ty: Type,
}

impl Param {
    /// The name the parameter travels under (in `kwargs`, `unique_key`, `lock_key`): a raw
    /// identifier (`r#type`) without its `r#`, as Python spells it.
    fn name(&self) -> String {
        self.ident.unraw().to_string()
    }
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
    let batch = args.batch == Some(true);
    let call_params = if batch {
        batch_items(&func, &params, &mut errors)
    } else {
        params.clone()
    };
    if let (Some((_, span)), false) = (&args.schedule, params.is_empty()) {
        push_error(
            &mut errors,
            syn::Error::new(
                *span,
                "a periodic task takes no parameters: each period runs it with none",
            ),
        );
    }
    for keys in [&args.unique_key, &args.lock_key].into_iter().flatten() {
        for key in keys {
            if !call_params.iter().any(|p| p.name() == key.value()) {
                let names: Vec<String> = call_params
                    .iter()
                    .map(|p| format!("`{}`", p.name()))
                    .collect();
                let listed = if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                };
                let message = format!(
                    "`{}` is not a parameter of this task; its parameters are {listed}",
                    key.value()
                );
                push_error(&mut errors, syn::Error::new(key.span(), message));
            }
        }
    }
    if let Some(err) = errors {
        return with_errors(quote!(#func), err);
    }
    generate(&func, &args, &call_params, batch)
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
        push_error(
            errors,
            syn::Error::new(variadic.span(), "a task cannot be variadic"),
        );
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
                    let problem = match &*typed.ty {
                        Type::ImplTrait(_) => {
                            Some("a task parameter needs a concrete type, not `impl Trait`")
                        }
                        Type::Reference(_) => Some(
                            "a task parameter must be an owned type (`String`, not `&str`): \
                             arguments are decoded from JSON in another process",
                        ),
                        _ => None,
                    };
                    if let Some(problem) = problem {
                        push_error(errors, syn::Error::new(typed.ty.span(), problem));
                    }
                    params.push(Param {
                        ident: pat.ident.clone(),
                        ty: (*typed.ty).clone(),
                    });
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

fn generate(func: &ItemFn, args: &TaskArgs, params: &[Param], batch: bool) -> TokenStream {
    let vis = &func.vis;
    let ident = &func.sig.ident;
    // A raw identifier (`r#match`) is stored under its plain name, as Python spells it.
    let fn_name = ident.unraw().to_string();

    let name = match &args.name {
        Some(name) => quote!(#name),
        None => quote!(::core::concat!(::core::module_path!(), ":", #fn_name)),
    };
    let options = spec_options(args);

    let idents: Vec<&Ident> = params.iter().map(|p| &p.ident).collect();
    let types: Vec<&Type> = params.iter().map(|p| &p.ty).collect();
    let arg_checks = types.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            ::tiger::__private::assert_task_arg::<#ty>();
        }
    });
    let names: Vec<String> = params.iter().map(|p| p.name()).collect();
    // Spanned on each parameter's type, so a type that cannot travel as JSON is reported
    // there and not on the attribute.
    let writes = params.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote_spanned!(ty.span()=> .arg::<#ty>(&#ident))
    });
    let reads: Vec<TokenStream> = params
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let (ident, ty, name) = (&p.ident, &p.ty, p.name());
            quote_spanned!(ty.span()=> let #ident = args.get::<#ty>(#index, #name)?;)
        })
        .collect();
    let registration = if batch {
        let item_types: Vec<&Type> = params.iter().map(|p| &p.ty).collect();
        let (item_type, item) = match idents.as_slice() {
            [single] => (quote!(#(#item_types)*), quote!(#single)),
            _ => (quote!((#(#item_types,)*)), quote!((#(#idents,)*))),
        };
        let body = call_body(func, &[quote!(items)]);
        quote! {
        type __TigerItem = #item_type;

        fn __tiger_decode(
            args: &::tiger::__private::Args<'_>,
        ) -> ::core::result::Result<::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send>, ::tiger::__private::ArgError> {
            args.check(&[#(#names),*])?;
            #(#reads)*
            ::core::result::Result::Ok(::std::boxed::Box::new(#item))
        }

        fn __tiger_batch(
            items: ::std::vec::Vec<::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send>>,
        ) -> ::tiger::__private::Body {
            let items: ::std::vec::Vec<__TigerItem> = items
                .into_iter()
                .map(|item| *item.downcast::<__TigerItem>().expect("a batch item decoded for this task"))
                .collect();
            #body
        }

        fn __tiger_call(
            args: &::tiger::__private::Args<'_>,
        ) -> ::core::result::Result<::tiger::__private::Body, ::tiger::__private::ArgError> {
            ::core::result::Result::Ok(__tiger_batch(::std::vec![__tiger_decode(args)?]))
        }

                }
    } else {
        let args_list: Vec<TokenStream> = idents.iter().map(|i| quote!(#i)).collect();
        let body = call_body(func, &args_list);
        quote! {
        fn __tiger_call(
            args: &::tiger::__private::Args<'_>,
        ) -> ::core::result::Result<::tiger::__private::Body, ::tiger::__private::ArgError> {
            args.check(&[#(#names),*])?;
            #(#reads)*
            ::core::result::Result::Ok(#body)
        }

                }
    };
    let batch_calls = if batch {
        quote!(::core::option::Option::Some(
            ::tiger::__private::BatchCalls {
                decode: __tiger_decode,
                call: __tiger_batch
            }
        ))
    } else {
        quote!(::core::option::Option::None)
    };

    let handle_doc = format!(
        "The task [`{fn_name}()`](fn@{fn_name}): `{fn_name}::delay(...)` enqueues a call.\n\n\
         Generated by `#[tiger::task]` next to the function, which stays as written."
    );
    let delay_doc = format!(
        "Enqueues a call of [`{fn_name}()`](fn@{fn_name}) with these arguments when the \
         returned [`Delay`](::tiger::Delay) is awaited. Set per-call options on the `Delay` \
         first (`.queue(...)`, `.on(&tiger)`)."
    );

    let delay_many_doc = format!(
        "Enqueues many calls of [`{fn_name}()`](fn@{fn_name}) when the returned \
         [`DelayMany`](::tiger::DelayMany) is awaited: one item per call, {item}. They are \
         written in pipelines, each task as `delay` writes it.",
        item = match idents.len() {
            0 => "`()`",
            1 => "the argument",
            _ => "a tuple of the arguments",
        }
    );
    let (item_type, item_pattern) = match (idents.as_slice(), types.as_slice()) {
        ([ident], [ty]) => (quote!(#ty), quote!(#ident)),
        _ => (quote!((#(#types,)*)), quote!((#(#idents,)*))),
    };

    quote! {
        #func

        #[doc = #handle_doc]
        #[allow(non_camel_case_types)]
        #vis struct #ident {}

        impl #ident {
            /// The serialized name the worker looks this task up by.
            #vis const NAME: &'static str = #name;

                        #[doc(hidden)]
            #vis const SPEC: ::tiger::__private::TaskSpec = ::tiger::__private::TaskSpec {
                name: Self::NAME,
                params: &[#(#names),*],
                #options
                ..::tiger::__private::TaskSpec::DEFAULT
            };

            #[doc = #delay_doc]
            #[allow(clippy::too_many_arguments)]
            #vis fn delay(#(#idents: #types),*) -> ::tiger::Delay {
                ::tiger::Delay::new(
                    &Self::SPEC,
                    ::tiger::__private::ArgsWriter::new()#(#writes)*.finish(),
                )
            }

            #[doc = #delay_many_doc]
            #vis fn delay_many(
                calls: impl ::core::iter::IntoIterator<Item = #item_type>,
            ) -> ::tiger::DelayMany {
                ::tiger::DelayMany::new(
                    calls.into_iter().map(|#item_pattern| Self::delay(#(#idents),*)),
                )
            }
        }

        const _: () = {
            const _: fn() = || {
                #(#arg_checks)*
            };

                        #registration

            ::tiger::__private::inventory::submit! {
                ::tiger::__private::TaskEntry {
                    spec: &#ident::SPEC,
                    file: ::core::file!(),
                    line: ::core::line!(),
                    call: __tiger_call,
                    batch: #batch_calls,
                }
            }
        };
    }
}

/// The `TaskSpec` fields the attribute sets, each followed by a comma.
fn spec_options(args: &TaskArgs) -> TokenStream {
    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));
    let keys = |keys: &Vec<syn::LitStr>| some(quote!(&[#(#keys),*]));
    let mut fields = TokenStream::new();
    if let Some(queue) = &args.queue {
        let value = some(quote!(#queue));
        fields.extend(quote!(queue: #value,));
    }
    // A periodic task is always unique (set with the schedule below).
    let unique = if args.schedule.is_some() {
        None
    } else {
        args.unique
    };
    for (field, flag) in [
        ("unique", unique),
        ("lock", args.lock),
        ("retry", args.retry),
    ] {
        if let Some(flag) = flag {
            let field = syn::Ident::new(field, proc_macro2::Span::call_site());
            fields.extend(quote!(#field: #flag,));
        }
    }
    if let Some(list) = &args.unique_key {
        let value = keys(list);
        fields.extend(quote!(unique_key: #value,));
    }
    if let Some(list) = &args.lock_key {
        let value = keys(list);
        fields.extend(quote!(lock_key: #value,));
    }
    if let Some(types) = &args.retry_on {
        let value = some(quote! {
            ::tiger::__private::RetryOn {
                names: || ::std::vec![#(::tiger::__private::exception_name_of::<#types>()),*],
                matches: |error| false #(|| ::tiger::__private::chain_has::<#types>(error))*,
            }
        });
        fields.extend(quote!(retry_on: #value,));
    }
    if let Some(method) = &args.retry_method {
        let value = match method {
            RetryMethodArg::Builtin { helper, args } => {
                let last = args.len() - 1;
                let values = args.iter().enumerate().map(|(i, arg)| {
                    if i == last {
                        quote!(#arg)
                    } else {
                        quote!(#arg as f64)
                    }
                });
                some(quote!(::tiger::retry::#helper(#(#values),*)))
            }
            RetryMethodArg::Custom(path) => {
                let last = path
                    .segments
                    .last()
                    .map(|s| s.ident.to_string())
                    .unwrap_or_default();
                some(
                    quote!(::tiger::RetryMethod::custom(::core::concat!(::core::module_path!(), ":", #last), #path)),
                )
            }
        };
        fields.extend(quote!(retry_method: #value,));
    }
    if let Some(seconds) = &args.hard_timeout {
        let value = some(quote!(#seconds as f64));
        fields.extend(quote!(hard_timeout: #value,));
    }
    if let Some(size) = &args.max_queue_size {
        let value = some(quote!(#size));
        fields.extend(quote!(max_queue_size: #value,));
    }
    if let Some(count) = &args.max_stored_executions {
        let value = some(quote!(#count));
        fields.extend(quote!(max_stored_executions: #value,));
    }
    if let Some((schedule, _)) = &args.schedule {
        let value = match schedule {
            ScheduleArg::Periodic(seconds) => some(quote!(::tiger::periodic(#seconds))),
            ScheduleArg::Cron(expr) => some(quote!(::tiger::cron(#expr))),
        };
        // Periodic tasks are unique: one id for every period and every worker.
        fields.extend(quote!(schedule: #value, unique: true,));
    }
    fields
}

/// For a `batch` task: checks that the function takes one `Vec<Item>` and returns the
/// parameters of one call, `arg0: A, arg1: B` for `Item = (A, B)`, `arg0: T` otherwise.
fn batch_items(func: &ItemFn, params: &[Param], errors: &mut Option<syn::Error>) -> Vec<Param> {
    const SHAPE: &str = "a `batch` task takes one parameter, a `Vec` of its calls' arguments: \
                         `Vec<T>` for calls with one argument, `Vec<(A, B, ...)>` for several";
    let item = match params {
        [only] => vec_item(&only.ty),
        _ => None,
    };
    let Some(item) = item else {
        let span = params
            .first()
            .map_or(func.sig.ident.span(), |p| p.ty.span());
        push_error(errors, syn::Error::new(span, SHAPE));
        return Vec::new();
    };
    let types: Vec<Type> = match item {
        Type::Tuple(tuple) if !tuple.elems.is_empty() => tuple.elems.iter().cloned().collect(),
        other => vec![other.clone()],
    };
    types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| Param {
            ident: Ident::new(&format!("arg{i}"), ty.span()),
            ty,
        })
        .collect()
}

/// `T` of a type written `Vec<T>`.
fn vec_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Vec" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
            match args.args.first()? {
                syn::GenericArgument::Type(item) => Some(item),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The expression that runs the function: a future for `async fn`, a closure for `fn`.
fn call_body(func: &ItemFn, idents: &[TokenStream]) -> TokenStream {
    let ident = &func.sig.ident;
    let output_span = match &func.sig.output {
        ReturnType::Default => func.sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let sig_span = func.sig.span();
    if func.sig.asyncness.is_some() {
        let outcome =
            quote_spanned!(output_span=> ::tiger::__private::outcome(#ident(#(#idents),*).await));
        quote_spanned!(sig_span=> ::tiger::__private::Body::future(async move { #outcome }))
    } else {
        let outcome =
            quote_spanned!(output_span=> ::tiger::__private::outcome(#ident(#(#idents),*)));
        quote_spanned!(sig_span=> ::tiger::__private::Body::blocking(move || #outcome))
    }
}
