//! Parses the arguments of `#[tiger::task(...)]` into [`TaskArgs`].

use proc_macro2::{Span, TokenStream};
use syn::{
    Expr, ExprArray, ExprLit, Lit, LitStr, Path, Token, meta::ParseNestedMeta, parse::Parser,
    spanned::Spanned,
};

/// The option keys the attribute accepts, in the order the error message lists them.
const KNOWN: &[&str] = &[
    "queue",
    "name",
    "unique",
    "unique_key",
    "lock",
    "lock_key",
    "retry",
    "retry_on",
    "retry_method",
    "hard_timeout",
    "max_queue_size",
    "max_stored_executions",
    "schedule",
    "batch",
];

/// A list of parameter names with the span of each, for errors.
pub(crate) type Names = Vec<LitStr>;

/// `retry_method = ...`.
pub(crate) enum RetryMethodArg {
    /// `fixed(d, max)`, `linear(d, inc, max)` or `exponential(d, factor, max)`: the helper's
    /// name and its arguments as written.
    Builtin { helper: syn::Ident, args: Vec<Expr> },
    /// A path to `fn(u32) -> Option<Duration>`.
    Custom(Path),
}

/// `schedule = ...`.
pub(crate) enum ScheduleArg {
    /// `periodic(hours = 1, minutes = 30)`, added up into seconds.
    Periodic(u64),
    /// `cron("*/5 * * * *")`.
    Cron(LitStr),
}

/// The parsed arguments of one `#[tiger::task(...)]`.
#[derive(Default)]
pub(crate) struct TaskArgs {
    pub(crate) queue: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) unique: Option<bool>,
    pub(crate) unique_key: Option<Names>,
    pub(crate) lock: Option<bool>,
    pub(crate) lock_key: Option<Names>,
    pub(crate) retry: Option<bool>,
    pub(crate) retry_on: Option<Vec<Path>>,
    pub(crate) retry_method: Option<RetryMethodArg>,
    /// Seconds, as a literal (int or float).
    pub(crate) hard_timeout: Option<Lit>,
    pub(crate) max_queue_size: Option<syn::LitInt>,
    pub(crate) max_stored_executions: Option<syn::LitInt>,
    /// The span of the `schedule` key, for errors about the function.
    pub(crate) schedule: Option<(ScheduleArg, Span)>,
    /// `batch`: the function takes a `Vec` of its calls' arguments.
    pub(crate) batch: Option<bool>,
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
        let span = ident.span();
        let duplicate = || syn::Error::new(span, format!("duplicate option `{key}`: give it once"));
        macro_rules! set {
            ($slot:expr, $value:expr) => {{
                if $slot.is_some() {
                    return Err(duplicate());
                }
                $slot = Some($value);
            }};
        }
        match key.as_str() {
            "queue" => {
                let text = string(&key, span, value)?;
                validate_queue(&text)?;
                set!(self.queue, text)
            }
            "name" => {
                let text = string(&key, span, value)?;
                if text.value().is_empty() {
                    return Err(syn::Error::new(text.span(), "`name` must not be empty"));
                }
                set!(self.name, text)
            }
            "unique" => set!(self.unique, flag(&key, value)?),
            "lock" => set!(self.lock, flag(&key, value)?),
            "retry" => set!(self.retry, flag(&key, value)?),
            "batch" => set!(self.batch, flag(&key, value)?),
            "unique_key" => set!(self.unique_key, names(&key, span, value)?),
            "lock_key" => set!(self.lock_key, names(&key, span, value)?),
            "retry_on" => set!(self.retry_on, paths(&key, span, value)?),
            "retry_method" => set!(self.retry_method, retry_method(span, value)?),
            "hard_timeout" => set!(self.hard_timeout, seconds(&key, span, value)?),
            "max_queue_size" => set!(self.max_queue_size, count(&key, span, value)?),
            "max_stored_executions" => set!(self.max_stored_executions, count(&key, span, value)?),
            "schedule" => set!(self.schedule, (schedule(span, value)?, span)),
            _ => return Err(syn::Error::new(span, unknown_message(&format!("`{key}`")))),
        }
        Ok(())
    }
}

fn string(key: &str, span: Span, value: Option<Expr>) -> syn::Result<LitStr> {
    match value {
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        })) => Ok(text),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("expected a string: `{key} = \"...\"`"),
        )),
        None => Err(syn::Error::new(span, format!("expected `{key} = \"...\"`"))),
    }
}

/// `unique` alone, or `unique = true` / `unique = false`.
fn flag(key: &str, value: Option<Expr>) -> syn::Result<bool> {
    match value {
        None => Ok(true),
        Some(Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        })) => Ok(b.value),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("expected `{key}`, `{key} = true` or `{key} = false`"),
        )),
    }
}

fn array(key: &str, span: Span, value: Option<Expr>, what: &str) -> syn::Result<ExprArray> {
    match value {
        Some(Expr::Array(array)) => Ok(array),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("expected a list: `{key} = [{what}]`"),
        )),
        None => Err(syn::Error::new(
            span,
            format!("expected `{key} = [{what}]`"),
        )),
    }
}

/// `["user_id", "account"]`: parameter names (checked against the function later).
fn names(key: &str, span: Span, value: Option<Expr>) -> syn::Result<Names> {
    let list = array(key, span, value, "\"param\", ...")?;
    if list.elems.is_empty() {
        return Err(syn::Error::new_spanned(
            &list,
            format!("`{key}` needs at least one parameter name"),
        ));
    }
    list.elems
        .into_iter()
        .map(|elem| match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(text),
                ..
            }) => Ok(text),
            other => Err(syn::Error::new_spanned(
                other,
                "expected a parameter name as a string",
            )),
        })
        .collect()
}

/// `[MyError, io::Error]`: error types.
fn paths(key: &str, span: Span, value: Option<Expr>) -> syn::Result<Vec<Path>> {
    let list = array(key, span, value, "ErrorType, ...")?;
    if list.elems.is_empty() {
        return Err(syn::Error::new_spanned(
            &list,
            format!("`{key}` needs at least one error type"),
        ));
    }
    list.elems
        .into_iter()
        .map(|elem| match elem {
            Expr::Path(path) if path.qself.is_none() => Ok(path.path),
            other => Err(syn::Error::new_spanned(other, "expected an error type")),
        })
        .collect()
}

fn retry_method(span: Span, value: Option<Expr>) -> syn::Result<RetryMethodArg> {
    const EXPECTED: &str = "expected `fixed(delay, max)`, `linear(delay, increment, max)`, `exponential(delay, factor, max)` \
         or a path to a `fn(u32) -> Option<Duration>`";
    match value {
        Some(Expr::Call(call)) => {
            let Expr::Path(func) = &*call.func else {
                return Err(syn::Error::new_spanned(&call.func, EXPECTED));
            };
            // `fixed(..)` or a path ending in it (`tiger::fixed(..)`).
            let Some(helper) = func
                .path
                .segments
                .last()
                .map(|segment| segment.ident.clone())
            else {
                return Err(syn::Error::new_spanned(&func.path, EXPECTED));
            };
            let arity = match helper.to_string().as_str() {
                "fixed" => 2,
                "linear" | "exponential" => 3,
                _ => return Err(syn::Error::new(helper.span(), EXPECTED)),
            };
            if call.args.len() != arity {
                return Err(syn::Error::new_spanned(
                    &call.args,
                    format!("`{helper}` takes {arity} numbers"),
                ));
            }
            for arg in &call.args {
                if !matches!(
                    arg,
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(_) | Lit::Float(_),
                        ..
                    })
                ) {
                    return Err(syn::Error::new_spanned(arg, "expected a number literal"));
                }
            }
            Ok(RetryMethodArg::Builtin {
                helper,
                args: call.args.into_iter().collect(),
            })
        }
        Some(Expr::Path(path)) if path.qself.is_none() => Ok(RetryMethodArg::Custom(path.path)),
        Some(other) => Err(syn::Error::new_spanned(other, EXPECTED)),
        None => Err(syn::Error::new(span, EXPECTED)),
    }
}

fn schedule(span: Span, value: Option<Expr>) -> syn::Result<ScheduleArg> {
    const EXPECTED: &str = "expected `periodic(seconds = .., minutes = .., hours = .., days = .., weeks = ..)` or `cron(\"* * * * *\")`";
    let Some(Expr::Call(call)) = value else {
        return Err(syn::Error::new(span, EXPECTED));
    };
    let helper = match &*call.func {
        Expr::Path(path) => path.path.get_ident().map(|i| i.to_string()),
        _ => None,
    };
    match helper.as_deref() {
        Some("cron") => match call.args.first() {
            Some(Expr::Lit(ExprLit {
                lit: Lit::Str(expr),
                ..
            })) if call.args.len() == 1 => {
                if expr.value().split_whitespace().count() != 5 {
                    return Err(syn::Error::new(
                        expr.span(),
                        "a cron expression has five fields: minute hour day month weekday",
                    ));
                }
                Ok(ScheduleArg::Cron(expr.clone()))
            }
            _ => Err(syn::Error::new_spanned(
                &call.args,
                "expected `cron(\"<five fields>\")`",
            )),
        },
        Some("periodic") => {
            let mut total: u64 = 0;
            for arg in &call.args {
                let Expr::Assign(assign) = arg else {
                    return Err(syn::Error::new_spanned(
                        arg,
                        "expected `unit = number`, e.g. `hours = 1`",
                    ));
                };
                let unit = match &*assign.left {
                    Expr::Path(path) => path.path.get_ident().map(|i| i.to_string()),
                    _ => None,
                };
                let seconds = match unit.as_deref() {
                    Some("seconds") => 1,
                    Some("minutes") => 60,
                    Some("hours") => 3600,
                    Some("days") => 86_400,
                    Some("weeks") => 604_800,
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &assign.left,
                            "expected `seconds`, `minutes`, `hours`, `days` or `weeks`",
                        ));
                    }
                };
                let count = match &*assign.right {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) => int.base10_parse::<u64>()?,
                    other => return Err(syn::Error::new_spanned(other, "expected a whole number")),
                };
                total = total.saturating_add(count.saturating_mul(seconds));
            }
            if total == 0 {
                return Err(syn::Error::new_spanned(
                    &call,
                    "a periodic schedule needs a positive period",
                ));
            }
            Ok(ScheduleArg::Periodic(total))
        }
        _ => Err(syn::Error::new_spanned(&call.func, EXPECTED)),
    }
}

/// A positive number of seconds.
fn seconds(key: &str, span: Span, value: Option<Expr>) -> syn::Result<Lit> {
    match value {
        Some(Expr::Lit(ExprLit {
            lit: lit @ (Lit::Int(_) | Lit::Float(_)),
            ..
        })) => {
            let positive = match &lit {
                Lit::Int(int) => int.base10_parse::<u64>().is_ok_and(|n| n > 0),
                Lit::Float(float) => float
                    .base10_parse::<f64>()
                    .is_ok_and(|f| f > 0.0 && f.is_finite()),
                _ => false,
            };
            if positive {
                Ok(lit)
            } else {
                Err(syn::Error::new(
                    lit.span(),
                    format!("`{key}` must be a positive number of seconds"),
                ))
            }
        }
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("expected seconds: `{key} = 30` or `{key} = 2.5`"),
        )),
        None => Err(syn::Error::new(
            span,
            format!("expected `{key} = <seconds>`"),
        )),
    }
}

/// A whole number.
fn count(key: &str, span: Span, value: Option<Expr>) -> syn::Result<syn::LitInt> {
    match value {
        Some(Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        })) if int.base10_parse::<u32>().is_ok() => Ok(int),
        Some(other) => Err(syn::Error::new(
            other.span(),
            format!("expected a whole number: `{key} = 10`"),
        )),
        None => Err(syn::Error::new(
            span,
            format!("expected `{key} = <number>`"),
        )),
    }
}

fn validate_queue(value: &LitStr) -> syn::Result<()> {
    let text = value.value();
    if text.is_empty() || text.starts_with('.') || text.ends_with('.') || text.contains("..") {
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
