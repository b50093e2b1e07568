//! Reads a gateway request without building it. The body is parsed as its top-level members only, each
//! value kept as the raw JSON text it arrived as; the few members routing and pricing need are read from
//! that text, and one pass over the whole body notes what can make the call dearer (prompt caching, images,
//! audio, web search). Nothing is built whose size could grow faster than the body's: a body of many tiny
//! values cannot make the sidecar allocate many times its size. The body goes upstream exactly as it came,
//! unless OpenAI must be asked to report a stream's usage or a `provider/model` name loses its `provider/`.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Api;
use crate::domain::model_chains::ModelChains;
use crate::domain::pricing::{CallBudget, PriceTable, estimate_prompt_tokens};
use crate::domain::provider::{ApiStyle, Provider, StreamUsage};

/// Top-level members a request may have; the APIs define a few dozen.
pub const MAX_MEMBERS: usize = 128;
const MAX_MODEL_CHARS: usize = 200;
/// `stream_options` is a tiny object; this bounds what is parsed of it.
const MAX_STREAM_OPTIONS_BYTES: usize = 4 * 1024;
/// Prompt tokens assumed for each image or audio clip (a URL of a few bytes can cost thousands of tokens)
/// and for each document or file (a PDF costs per page).
const ATTACHMENT_TOKENS: u64 = 3_000;
const DOCUMENT_TOKENS: u64 = 30_000;
/// Web searches assumed for a search tool that sets no `max_uses`.
const DEFAULT_WEB_SEARCHES: u64 = 10;

/// A parsed request: what we route and price by, and the body to send.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// Who serves it: the provider that lists the model, else the one a `provider/model` name names, else
    /// the API's own (OpenAI, Anthropic).
    pub provider: Provider,
    /// The model as the provider knows it (without a `provider/` in front).
    pub model: String,
    /// The models to try next, in order, while this one's provider is down or the platform's key for it is
    /// rate limited: the rest of an alias's or a fallback chain's models of this API's style.
    pub fallbacks: Vec<(Provider, String)>,
    /// Set on a fallback: the model asked for, which could not serve the call. Recorded with its usage.
    pub fallback_from: Option<String>,
    pub stream: bool,
    /// The client asked for OpenAI's final usage chunk itself; otherwise the sidecar asks for it and keeps
    /// it from the client.
    pub client_wants_usage_chunk: bool,
    /// The most the call may use (see [`CallBudget`]).
    pub budget: CallBudget,
    /// Processing the provider prices differently from its standard rates (OpenAI `priority`, `flex`,
    /// `scale`): the price table knows only standard rates, so credits cannot pay for it.
    pub special_service_tier: bool,
    /// Sent upstream as is (cheap to clone for retries).
    pub body: Bytes,
    /// The body as the client sent it: a fallback starts again from it.
    pub sent: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LlmRequestError {
    #[error("The body is not valid JSON.")]
    InvalidJson,
    #[error("The body must be a JSON object.")]
    NotAnObject,
    #[error("The body has more than 128 top-level fields.")]
    TooManyMembers,
    #[error("The body names a top-level field twice.")]
    DuplicateMember,
    #[error("\"model\" is required and must be a non-empty string of at most 200 characters.")]
    Model,
    #[error("\"stream\" must be true or false.")]
    Stream,
    #[error("\"stream_options\" must be an object or null.")]
    StreamOptions,
    #[error("The body is nested more than 128 levels deep.")]
    TooDeep,
}

pub fn parse_request(
    api: Api,
    raw: &Bytes,
    prices: &PriceTable,
    chains: &ModelChains,
) -> Result<LlmRequest, LlmRequestError> {
    let members = top_level_members(raw)?;
    let named =
        match members.iter().find(|(key, _)| key == "model").map(|(_, v)| serde_json::from_str::<String>(v.get())) {
            Some(Ok(m)) if !m.trim().is_empty() && m.chars().count() <= MAX_MODEL_CHARS => m,
            _ => return Err(LlmRequestError::Model),
        };
    // Without chains (the common case) only the model's own provider is looked up.
    let (first, fallbacks) = if chains.is_empty() {
        (target(api, &named, prices), Vec::new())
    } else {
        let mut targets = chains.chain(&named).into_iter().filter_map(|model| target_in_style(api, model, prices));
        let first = targets.next().unwrap_or_else(|| target(api, &named, prices));
        (first, targets.map(|(provider, model)| (provider, model.into_owned())).collect())
    };
    let mut request = match first {
        (provider, Cow::Borrowed(model)) if model == named => parse_members(api, provider, named, raw, &members)?,
        (provider, model) => renamed(api, provider, model.into_owned(), &members)?,
    };
    request.fallbacks = fallbacks;
    Ok(request)
}

/// The request with `model` in place of the client's: the body gets that name, and what depends on the
/// provider (asking for stream usage) is decided for `provider`.
fn renamed(api: Api, provider: Provider, model: String, members: &Members<'_>) -> Result<LlmRequest, LlmRequestError> {
    let model_json = serde_json::to_string(&model).expect("a string serializes");
    let renamed = Bytes::from(with_member(members, "model", &model_json));
    let members = top_level_members(&renamed)?;
    parse_members(api, provider, model, &renamed, &members)
}

impl LlmRequest {
    /// The same request for the next model of its chain, served by `provider`: only the model differs.
    pub fn for_fallback(&self, api: Api, provider: Provider, model: &str) -> LlmRequest {
        let members = top_level_members(&self.sent).expect("a body that parsed once parses again");
        let mut request = renamed(api, provider, model.to_owned(), &members).expect("only the model changed");
        request.sent = self.sent.clone();
        request.fallback_from = Some(self.fallback_from.clone().unwrap_or_else(|| self.model.clone()));
        request
    }
}

/// Like [`target`], but `None` for a model of the other API style (listed only by a provider of that style,
/// or named after one): a chain may list models of both, and the messages API cannot serve a chat
/// completion, nor the other way round.
fn target_in_style<'a>(api: Api, model: &'a str, prices: &PriceTable) -> Option<(Provider, Cow<'a, str>)> {
    let style = api.style();
    if let Some(provider) = prices.provider_of(style, model) {
        return Some((provider, Cow::Borrowed(model)));
    }
    let named = model.split_once('/').and_then(|(id, rest)| Some((id.parse::<Provider>().ok()?, rest)));
    match named {
        Some((provider, rest)) if provider.style() == style && !rest.trim().is_empty() => {
            return Some((provider, Cow::Borrowed(rest)));
        }
        Some((provider, _)) if provider.style() != style => return None,
        _ => {}
    }
    let other = match style {
        ApiStyle::OpenAi => ApiStyle::Anthropic,
        ApiStyle::Anthropic => ApiStyle::OpenAi,
    };
    match prices.provider_of(other, model) {
        Some(_) => None,
        None => Some((Provider::default_for(style), Cow::Borrowed(model))),
    }
}

/// Which provider serves `model` on `api`, and the model's name there: a provider of the API's style that lists
/// it (exactly, or a dated variant), else the one a `provider/model` name names, else the API's own provider,
/// at its conservative unknown-model price (which also gets a model of the other style, to refuse).
pub fn target<'a>(api: Api, model: &'a str, prices: &PriceTable) -> (Provider, Cow<'a, str>) {
    target_in_style(api, model, prices).unwrap_or((Provider::default_for(api.style()), Cow::Borrowed(model)))
}

fn parse_members(
    api: Api,
    provider: Provider,
    model: String,
    raw: &Bytes,
    members: &Members<'_>,
) -> Result<LlmRequest, LlmRequestError> {
    let member = |name: &str| members.iter().find(|(key, _)| key == name).map(|(_, value)| value.get());
    let stream = match member("stream").map(serde_json::from_str::<Option<bool>>) {
        None | Some(Ok(None)) => false,
        // Embeddings and token counts never stream: a `stream` member is the provider's to refuse, in a plain
        // answer.
        Some(Ok(Some(stream))) => stream && !matches!(api, Api::Embeddings | Api::CountTokens),
        Some(Err(_)) => return Err(LlmRequestError::Stream),
    };

    // A provider that reports usage unasked passes it on as is; so does any stream whose client asked.
    let mut client_wants_usage_chunk = provider.stream_usage() == StreamUsage::Always;
    let mut body = None;
    if api == Api::ChatCompletions && !client_wants_usage_chunk {
        let mut options = match member("stream_options") {
            None => Map::new(),
            Some(text) if text.len() > MAX_STREAM_OPTIONS_BYTES => return Err(LlmRequestError::StreamOptions),
            Some(text) => match serde_json::from_str::<Option<Map<String, Value>>>(text) {
                Ok(options) => options.unwrap_or_default(),
                Err(_) => return Err(LlmRequestError::StreamOptions),
            },
        };
        client_wants_usage_chunk = options.get("include_usage") == Some(&Value::Bool(true));
        if stream && !client_wants_usage_chunk {
            // Without this a stream carries no usage and could not be charged by real token counts.
            options.insert("include_usage".into(), Value::Bool(true));
            let options = serde_json::to_string(&options).expect("a JSON map serializes");
            body = Some(with_member(members, "stream_options", &options));
        }
    }

    let output_limit = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .filter_map(|name| count(member(name)?))
        .max();
    let completions = member("n").and_then(count).unwrap_or(1).max(1);
    let thinking = member("thinking").and_then(|text| serde_json::from_str::<Thinking>(text).ok());
    let thinking_budget = thinking.and_then(|t| t.budget_tokens).and_then(|b| count(&b.to_string()));
    let output_tokens = match (api, output_limit, thinking_budget) {
        // An embedding is priced by its input alone.
        (Api::Embeddings, ..) => Some(0),
        (_, None, None) => None,
        (_, limit, budget) => Some(limit.max(budget).unwrap_or(0).saturating_mul(completions)),
    };
    let audio_output = member("audio").is_some_and(|text| text != "null")
        || member("modalities").is_some_and(|text| text.contains("\"audio\""));

    // OpenAI: `auto` (the project's own default) and `default` are standard. Anthropic's values (`auto`,
    // `standard_only`) bill at standard rates unless the operator bought Priority Tier capacity.
    let special_service_tier = matches!(api, Api::ChatCompletions | Api::Responses)
        && member("service_tier")
            .and_then(|text| serde_json::from_str::<Option<String>>(text).ok().flatten())
            .is_some_and(|tier| !matches!(tier.as_str(), "auto" | "default"));

    let mut scan = Scan::default();
    // The body is valid JSON by now, so only nesting too deep to walk can fail here: such a body could hide
    // what makes it dearer, so it is refused.
    Walk(&mut scan)
        .deserialize(&mut serde_json::Deserializer::from_slice(raw))
        .map_err(|_| LlmRequestError::TooDeep)?;
    let prompt_tokens = estimate_prompt_tokens(raw.len())
        .saturating_add(scan.attachments.saturating_mul(ATTACHMENT_TOKENS))
        .saturating_add(scan.documents.saturating_mul(DOCUMENT_TOKENS));

    let budget = if api.is_billed() {
        CallBudget {
            prompt_tokens,
            output_tokens,
            completions,
            cache_writes: scan.cache_control,
            audio_input: scan.audio,
            audio_output,
            web_searches: scan.web_searches,
        }
    } else {
        // Nothing to hold for a call the provider does not bill.
        CallBudget { output_tokens: Some(0), ..CallBudget::default() }
    };
    Ok(LlmRequest {
        provider,
        model,
        fallbacks: Vec::new(),
        fallback_from: None,
        stream,
        client_wants_usage_chunk,
        budget,
        special_service_tier,
        body: body.map_or_else(|| raw.clone(), Bytes::from),
        sent: raw.clone(),
    })
}

#[derive(Deserialize)]
struct Thinking {
    budget_tokens: Option<f64>,
}

/// A token count as clients send it: `100`, or `16384.0` from languages without integers. Rounded up;
/// anything that is not a non-negative number says nothing (the provider will refuse it).
fn count(text: &str) -> Option<u64> {
    let number: f64 = serde_json::from_str(text).ok()?;
    (number.is_finite() && number >= 0.0)
        .then(|| if number >= u64::MAX as f64 { u64::MAX } else { number.ceil() as u64 })
}

type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

fn top_level_members(raw: &[u8]) -> Result<Members<'_>, LlmRequestError> {
    let refusal = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let members = MembersSeed { refusal: &refusal }.deserialize(&mut deserializer).and_then(|members| {
        deserializer.end()?;
        Ok(members)
    });
    members.map_err(|_| refusal.take().unwrap_or(LlmRequestError::InvalidJson))
}

/// The body with member `name` replaced by (or, if absent, extended with) `value`.
fn with_member(members: &Members<'_>, name: &str, value: &str) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(members.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + value.len() + 32);
    out.push(b'{');
    let mut write = |key: &str, value: &str| {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).expect("writing to a Vec cannot fail");
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    };
    let mut replaced = false;
    for (key, raw) in members {
        if key == name {
            write(key, value);
            replaced = true;
        } else {
            write(key, raw.get());
        }
    }
    if !replaced {
        write(name, value);
    }
    out.push(b'}');
    out
}

struct MembersSeed<'c> {
    refusal: &'c Cell<Option<LlmRequestError>>,
}

impl<'de> DeserializeSeed<'de> for MembersSeed<'_> {
    type Value = Members<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed<'_> {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Members<'de> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let refused = if members.len() == MAX_MEMBERS {
                Some(LlmRequestError::TooManyMembers)
            } else if members.iter().any(|(k, _)| *k == key) {
                Some(LlmRequestError::DuplicateMember)
            } else {
                None
            };
            if let Some(refusal) = refused {
                self.refusal.set(Some(refusal));
                return Err(de::Error::custom(refusal));
            }
            members.push((key, map.next_value()?));
        }
        Ok(members)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.not_an_object()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.not_an_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.not_an_object()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.not_an_object()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.not_an_object()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.not_an_object()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.not_an_object()
    }
}

impl MembersSeed<'_> {
    fn not_an_object<T, E: de::Error>(&self) -> Result<T, E> {
        self.refusal.set(Some(LlmRequestError::NotAnObject));
        Err(de::Error::custom(LlmRequestError::NotAnObject))
    }
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// What can make a call dearer than its text, found anywhere in the body.
#[derive(Debug, Default)]
struct Scan {
    /// A `cache_control` marker: the prompt may be written to Anthropic's cache.
    cache_control: bool,
    /// Images and audio clips, and documents or files, by reference or inline.
    attachments: u64,
    documents: u64,
    audio: bool,
    /// Web searches search tools may run.
    web_searches: u64,
}

/// Walks any JSON value without keeping it, noting into [`Scan`] what it finds.
struct Walk<'s>(&'s mut Scan);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A member whose value matters when it is a short string or a number; anything else is walked.
enum Noted<'de> {
    Text(Cow<'de, str>),
    Number(f64),
    Other,
}

struct NotedSeed<'s>(&'s mut Scan);

impl<'de> DeserializeSeed<'de> for NotedSeed<'_> {
    type Value = Noted<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NotedSeed<'_> {
    type Value = Noted<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Noted::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if v.len() <= 64 { Noted::Text(Cow::Owned(v.to_owned())) } else { Noted::Other })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Noted::Number(v as f64))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Noted::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Noted::Number(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Noted::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Noted::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Walk(self.0).visit_map(map).map(|()| Noted::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Walk(self.0).visit_seq(seq).map(|()| Noted::Other)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut kind = None;
        let mut max_uses = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "type" => {
                    if let Noted::Text(text) = map.next_value_seed(NotedSeed(self.0))? {
                        kind = Some(text);
                    }
                }
                "max_uses" => {
                    if let Noted::Number(n) = map.next_value_seed(NotedSeed(self.0))? {
                        max_uses = Some(n);
                    }
                }
                name => {
                    if name == "cache_control" {
                        self.0.cache_control = true;
                    }
                    if name == "input_audio" {
                        self.0.audio = true;
                    }
                    map.next_value_seed(Walk(self.0))?;
                }
            }
        }
        match kind.as_deref() {
            Some("image_url" | "image" | "input_image") => self.0.attachments += 1,
            Some("input_audio") => {
                self.0.attachments += 1;
                self.0.audio = true;
            }
            Some("document" | "file" | "input_file") => self.0.documents += 1,
            Some(tool) if tool.starts_with("web_search") => {
                let uses = max_uses.and_then(|n| count(&n.to_string())).unwrap_or(DEFAULT_WEB_SEARCHES);
                self.0.web_searches = self.0.web_searches.saturating_add(uses);
            }
            _ => {}
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::domain::money::Cents;

    use super::*;

    fn parse(api: Api, body: &Value) -> LlmRequest {
        parse_request(api, &Bytes::from(body.to_string()), &PriceTable::builtin(), &ModelChains::default()).unwrap()
    }

    fn sent(request: &LlmRequest) -> Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn reads_model_stream_and_limits_and_forwards_the_body_unchanged() {
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]});
        let request = parse(Api::ChatCompletions, &body);
        assert_eq!((request.model.as_str(), request.stream), ("gpt-4o-mini", false));
        assert_eq!(request.budget.output_tokens, Some(50));
        assert_eq!(request.body, body.to_string().as_bytes(), "byte for byte");
    }

    #[test]
    fn openai_priority_flex_and_scale_processing_are_told_apart_from_standard() {
        for (tier, special) in [
            (json!(null), false),
            (json!("auto"), false),
            (json!("default"), false),
            (json!("priority"), true),
            (json!("flex"), true),
            (json!("scale"), true),
        ] {
            let body = json!({"model": "gpt-4o", "service_tier": tier, "messages": []});
            assert_eq!(parse(Api::ChatCompletions, &body).special_service_tier, special, "{tier}");
        }
        let absent = parse(Api::ChatCompletions, &json!({"model": "gpt-4o"}));
        assert!(!absent.special_service_tier);
        let anthropic = json!({"model": "claude-sonnet-4-5", "service_tier": "standard_only", "max_tokens": 5});
        assert!(!parse(Api::Messages, &anthropic).special_service_tier);
    }

    #[test]
    fn openai_streams_always_ask_for_usage_and_remember_whether_the_client_did() {
        for options in [json!(null), json!({}), json!({"include_usage": false}), json!({"other": 1})] {
            let body = json!({"model": "gpt-4o", "stream": true, "stream_options": options, "messages": []});
            let request = parse(Api::ChatCompletions, &body);
            assert!(!request.client_wants_usage_chunk, "{options}");
            assert_eq!(sent(&request)["stream_options"]["include_usage"], true, "{options}");
            assert_eq!(sent(&request)["messages"], json!([]));
        }
        let absent = parse(Api::ChatCompletions, &json!({"model": "gpt-4o", "stream": true}));
        assert_eq!(sent(&absent)["stream_options"], json!({"include_usage": true}));
        let kept =
            parse(Api::ChatCompletions, &json!({"model": "gpt-4o", "stream": true, "stream_options": {"other": 1}}));
        assert_eq!(sent(&kept)["stream_options"]["other"], 1);
        let asked = json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}});
        let request = parse(Api::ChatCompletions, &asked);
        assert!(request.client_wants_usage_chunk);
        assert_eq!(request.body, asked.to_string().as_bytes());
        let anthropic = parse(Api::Messages, &json!({"model": "claude-3-5-haiku", "stream": true, "max_tokens": 10}));
        assert!(sent(&anthropic).get("stream_options").is_none(), "Anthropic streams always carry usage");
    }

    #[test]
    fn output_budgets_count_floats_n_and_thinking() {
        let budget = |api, body: Value| parse(api, &body).budget;
        assert_eq!(
            budget(Api::ChatCompletions, json!({"model": "m", "max_tokens": 16384.0})).output_tokens,
            Some(16_384)
        );
        assert_eq!(budget(Api::ChatCompletions, json!({"model": "m", "max_tokens": 10.2})).output_tokens, Some(11));
        let both = json!({"model": "m", "max_tokens": 10, "max_completion_tokens": 300});
        assert_eq!(budget(Api::ChatCompletions, both).output_tokens, Some(300), "the larger limit");
        let n = json!({"model": "m", "max_completion_tokens": 100, "n": 3.0});
        assert_eq!(budget(Api::ChatCompletions, n).output_tokens, Some(300));
        let open = budget(Api::ChatCompletions, json!({"model": "m", "n": 4}));
        assert_eq!((open.output_tokens, open.completions), (None, 4), "no limit: the model's maximum, four times");
        let thinking =
            json!({"model": "c", "max_tokens": 1000, "thinking": {"type": "enabled", "budget_tokens": 32000}});
        assert_eq!(budget(Api::Messages, thinking).output_tokens, Some(32_000));
        for bad in [json!("100"), json!(-5), json!(null)] {
            assert_eq!(
                budget(Api::ChatCompletions, json!({"model": "m", "max_tokens": bad})).output_tokens,
                None,
                "{bad}"
            );
        }
        assert_eq!(
            budget(Api::ChatCompletions, json!({"model": "m", "max_tokens": 1e300})).output_tokens,
            Some(u64::MAX)
        );
    }

    #[test]
    fn prompts_count_their_bytes_attachments_and_what_makes_them_dearer() {
        let plain = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(300)}]});
        let size = plain.to_string().len() as u64;
        assert_eq!(parse(Api::ChatCompletions, &plain).budget.prompt_tokens, size.div_ceil(3));

        let rich = json!({"model": "m", "modalities": ["text", "audio"], "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "file", "file": {"file_id": "f1"}}
        ]}]});
        let budget = parse(Api::ChatCompletions, &rich).budget;
        let size = rich.to_string().len() as u64;
        assert_eq!(budget.prompt_tokens, size.div_ceil(3) + 2 * ATTACHMENT_TOKENS + DOCUMENT_TOKENS);
        assert!(budget.audio_input && budget.audio_output && !budget.cache_writes);

        let anthropic = json!({"model": "c", "max_tokens": 10,
            "system": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "tools": [{"max_uses": 3, "type": "web_search_20250305", "name": "web_search"}, {"type": "web_search_20250305", "name": "w2"}],
            "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://e/x.pdf"}}]}]});
        let budget = parse(Api::Messages, &anthropic).budget;
        assert!(budget.cache_writes);
        assert_eq!(budget.web_searches, 3 + DEFAULT_WEB_SEARCHES);
        let escaped =
            br#"{"model":"c","system":[{"type":"text","text":"x","cache\u005fcontrol":{"type":"ephemeral"}}]}"#;
        let request =
            parse_request(Api::Messages, &Bytes::from_static(escaped), &PriceTable::builtin(), &ModelChains::default())
                .unwrap();
        assert!(request.budget.cache_writes, "escapes do not hide it");
    }

    #[test]
    fn refuses_what_is_not_a_usable_request() {
        let refuse = |raw: &[u8]| {
            parse_request(
                Api::ChatCompletions,
                &Bytes::copy_from_slice(raw),
                &PriceTable::builtin(),
                &ModelChains::default(),
            )
            .unwrap_err()
        };
        assert_eq!(refuse(b"{\"model\": "), LlmRequestError::InvalidJson);
        assert_eq!(refuse(b"{\"model\": \"m\"} trailing"), LlmRequestError::InvalidJson);
        assert_eq!(refuse(b"[1, 2]"), LlmRequestError::NotAnObject);
        assert_eq!(refuse(b"\"text\""), LlmRequestError::NotAnObject);
        for body in [json!({}), json!({"model": ""}), json!({"model": 5}), json!({"model": "x".repeat(201)})] {
            assert_eq!(refuse(body.to_string().as_bytes()), LlmRequestError::Model, "{body}");
        }
        assert_eq!(refuse(br#"{"model": "gpt-4o", "stream": "yes"}"#), LlmRequestError::Stream);
        assert_eq!(
            refuse(br#"{"model": "gpt-4o", "stream": true, "stream_options": 5}"#),
            LlmRequestError::StreamOptions
        );
        // The provider might read the other copy: a request is read one way only.
        assert_eq!(refuse(br#"{"model": "gpt-4o-mini", "model": "o1-pro"}"#), LlmRequestError::DuplicateMember);
        assert_eq!(refuse(br#"{"model": "m", "mod\u0065l": "o1-pro"}"#), LlmRequestError::DuplicateMember);
        let many: Map<String, Value> = (0..=MAX_MEMBERS).map(|i| (format!("k{i}"), json!(0))).collect();
        assert_eq!(refuse(Value::Object(many).to_string().as_bytes()), LlmRequestError::TooManyMembers);
    }

    #[test]
    fn a_body_of_many_tiny_values_is_read_without_building_them() {
        // 4 MB of `[]`: a parsed tree would take hundreds of MB; here it is one raw member.
        let mut raw = b"{\"model\":\"m\",\"messages\":[".to_vec();
        for _ in 0..1_000_000 {
            raw.extend_from_slice(b"[],");
        }
        raw.extend_from_slice(b"[]]}");
        let request = parse_request(
            Api::ChatCompletions,
            &Bytes::from(raw.clone()),
            &PriceTable::builtin(),
            &ModelChains::default(),
        )
        .unwrap();
        assert_eq!(request.body.len(), raw.len());
        let deep = format!("{{\"model\":\"m\",\"messages\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        let refused =
            parse_request(Api::ChatCompletions, &Bytes::from(deep), &PriceTable::builtin(), &ModelChains::default())
                .map(|r| r.body.len());
        assert_eq!(refused, Err(LlmRequestError::TooDeep));
    }

    #[test]
    fn embeddings_are_priced_by_input_and_never_stream_and_token_counts_hold_nothing() {
        let embeddings =
            parse(Api::Embeddings, &json!({"model": "text-embedding-3-small", "input": ["a", "b"], "stream": true}));
        assert_eq!((embeddings.stream, embeddings.budget.output_tokens), (false, Some(0)));
        assert!(embeddings.budget.prompt_tokens > 0);
        let table = PriceTable::builtin();
        let (price, _) = table.price(embeddings.provider, &embeddings.model);
        assert_eq!(price.estimate(&embeddings.budget), Cents::per_unit(embeddings.budget.prompt_tokens, price.input));
        let mistral = parse(Api::Embeddings, &json!({"model": "mistral-embed", "input": "x"}));
        assert_eq!(mistral.provider.as_str(), "mistral");
        let count = parse(
            Api::CountTokens,
            &json!({"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(
            (count.stream, count.budget),
            (false, CallBudget { output_tokens: Some(0), ..CallBudget::default() })
        );
        assert_eq!(table.estimate(count.provider, &count.model, &count.budget), Cents::ZERO);
    }

    #[test]
    fn responses_budget_their_max_output_tokens_and_may_ask_for_a_special_service_tier() {
        let request = parse(
            Api::Responses,
            &json!({"model": "gpt-4o", "input": "hi", "max_output_tokens": 300, "service_tier": "flex"}),
        );
        assert_eq!((request.budget.output_tokens, request.special_service_tier), (Some(300), true));
        assert_eq!(request.provider, Provider::openai());
    }

    #[test]
    fn a_provider_named_before_the_model_serves_it_under_the_models_own_name() {
        let request = parse(
            Api::ChatCompletions,
            &json!({"model": "openrouter/meta-llama/llama-3-70b", "messages": [], "extra": {"kept": true}}),
        );
        assert_eq!((request.provider.as_str(), request.model.as_str()), ("openrouter", "meta-llama/llama-3-70b"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["model"], "meta-llama/llama-3-70b");
        assert_eq!(body["extra"], json!({"kept": true}), "everything else passes as it came");
        for model in ["anthropic/claude-3-5-haiku", "nobody/x", "openai/"] {
            let request = parse(Api::ChatCompletions, &json!({"model": model}));
            assert_eq!((request.provider, request.model.as_str()), (Provider::openai(), model), "{model}");
        }
        let groq = parse(Api::ChatCompletions, &json!({"model": "openai/gpt-oss-120b"}));
        assert_eq!(
            (groq.provider.as_str(), groq.model.as_str()),
            ("groq", "openai/gpt-oss-120b"),
            "a listed name wins"
        );
    }
}
