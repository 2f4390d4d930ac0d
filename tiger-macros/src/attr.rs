//! Parses the arguments of `#[tiger::task(...)]` into [`TaskArgs`].

use proc_macro2::TokenStream;
use syn::{Expr, ExprLit, Lit, LitStr, Token, meta::ParseNestedMeta, parse::Parser};

/// The option keys the attribute accepts, in the order the error message lists them.
const KNOWN: &[&str] = &["queue", "name"];

/// The parsed arguments of one `#[tiger::task(...)]`.
#[derive(Default)]
pub(crate) struct TaskArgs {
    /// `queue = "..."`: the queue a `delay` goes to unless the call names another.
    pub(crate) queue: Option<LitStr>,
    /// `name = "..."`: the serialized name, overriding `module_path:fn_name`.
    pub(crate) name: Option<LitStr>,
}

impl TaskArgs {
    /// Parses the attribute's token stream, collecting every error instead of stopping at the
    /// first one.
    pub(crate) fn parse(tokens: TokenStream) -> Result<Self, syn::Error> {
        let mut args = TaskArgs::default();
        let mut errors: Option<syn::Error> = None;
        let parser = syn::meta::parser(|meta| {
            if let Err(err) = args.parse_one(&meta) {
                push_error(&mut errors, err);
            }
            Ok(())
        });
        parser.parse2(tokens)?;
        match errors {
            Some(err) => Err(err),
            None => Ok(args),
        }
    }

    fn parse_one(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        // Consume `= value` first, whatever the key, so one bad option does not derail the
        // parsing of the ones after it.
        let value: Option<Expr> = if meta.input.peek(Token![=]) {
            Some(meta.value()?.parse()?)
        } else {
            None
        };
        let Some(ident) = meta.path.get_ident() else {
            return Err(syn::Error::new_spanned(
                &meta.path,
                unknown_message("this path"),
            ));
        };
        let key = ident.to_string();
        let slot = match key.as_str() {
            "queue" => &mut self.queue,
            "name" => &mut self.name,
            _ => {
                return Err(syn::Error::new(
                    ident.span(),
                    unknown_message(&format!("`{key}`")),
                ));
            }
        };
        let value = match value {
            Some(Expr::Lit(ExprLit {
                lit: Lit::Str(text),
                ..
            })) => text,
            Some(other) => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("expected a string: `{key} = \"...\"`"),
                ));
            }
            None => {
                return Err(syn::Error::new(
                    ident.span(),
                    format!("expected `{key} = \"...\"`"),
                ));
            }
        };
        if slot.is_some() {
            return Err(syn::Error::new(
                ident.span(),
                format!("duplicate option `{key}`: give it once"),
            ));
        }
        validate(&key, &value)?;
        *slot = Some(value);
        Ok(())
    }
}

fn validate(key: &str, value: &LitStr) -> syn::Result<()> {
    let text = value.value();
    if text.is_empty() {
        return Err(syn::Error::new(
            value.span(),
            format!("`{key}` must not be empty"),
        ));
    }
    if key == "queue" && (text.starts_with('.') || text.ends_with('.') || text.contains("..")) {
        return Err(syn::Error::new(
            value.span(),
            "a queue name is dot-separated parts, none of them empty",
        ));
    }
    Ok(())
}

fn unknown_message(what: &str) -> String {
    let valid = KNOWN
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("unknown task option {what}; expected one of {valid}")
}

/// Adds `err` to the errors collected so far.
pub(crate) fn push_error(errors: &mut Option<syn::Error>, err: syn::Error) {
    match errors {
        Some(all) => all.combine(err),
        None => *errors = Some(err),
    }
}
