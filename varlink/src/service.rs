//! A varlink service on zlink's server loop that answers every well-formed JSON call.
//!
//! zlink's `#[service]` macro closes the connection when a call's parameters do not deserialize
//! (research/rust-stack.md, pitfall 3). berth must answer such calls with
//! `org.varlink.service.InvalidParameter` and keep serving, so calls are received leniently as
//! [`RawCall`] and each interface parses its own parameters with [`parse_params`].
//! `org.varlink.service` introspection is answered here from the interface's IDL, which is
//! derived from the same Rust types the parameters are parsed into (see `berth_protocol::idl`).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;

use berth_logging::Untrusted;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Level;
use zlink::service::{MethodReply, ReplyStreamItem};
use zlink::{Call, Connection, Reply};

use crate::limits::MAX_PARAMETERS_BYTES;

/// The socket type berth's clients connect with.
pub type Socket = zlink::tokio::unix::Stream;

/// The socket type every berth service runs on: a connection counted against its peer's limit.
pub type ServerSocket = crate::listener::CountedStream;

/// A method call as it arrives: only `method` must be a string. The parameters stay text
/// until their size is checked: parsed into a [`Value`], a 4 MiB message of `[0,0,...]` took
/// 130 MiB.
#[derive(Debug, Deserialize)]
pub struct RawCall {
    pub method: String,
    #[serde(default)]
    pub parameters: Option<Box<serde_json::value::RawValue>>,
}

/// A method call as a client sends it.
#[derive(Debug, Serialize)]
pub struct OutgoingCall<'a> {
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a Value>,
}

/// A stream of replies for a `more` call (or for a slow single reply).
pub type ReplyStream = Pin<Box<dyn Stream<Item = ReplyStreamItem<Value, Value>>>>;

/// What a method handler answers.
pub enum Outcome {
    /// One successful reply with these parameters (an object).
    Reply(Value, Vec<OwnedFd>),
    /// An error reply: a whole `{"error": ..., "parameters": ...}` object.
    Error(Value),
    /// Replies produced later; the server keeps serving other clients meanwhile.
    Stream(ReplyStream),
}

impl Outcome {
    /// A successful reply from anything serializable.
    pub fn reply<T: Serialize>(value: &T) -> Outcome {
        match to_value(value) {
            Ok(v) => Outcome::Reply(v, Vec::new()),
            Err(e) => Outcome::Error(e),
        }
    }

    /// An error reply from a `zlink::ReplyError` enum (or any serializable error object).
    pub fn error<E: Serialize>(error: &E) -> Outcome {
        Outcome::Error(to_value(error).unwrap_or_else(|e| e))
    }

    /// A reply or an error reply, from a typed result.
    pub fn from_result<T: Serialize, E: Serialize>(result: Result<T, E>) -> Outcome {
        match result {
            Ok(v) => Outcome::reply(&v),
            Err(e) => Outcome::error(&e),
        }
    }

    /// A reply that is computed by `future` while the server goes on serving others.
    pub fn later<F, T, E>(future: F) -> Outcome
    where
        F: Future<Output = Result<T, E>> + 'static,
        T: Serialize,
        E: Serialize,
    {
        let stream = futures_util::stream::once(async move {
            match future.await {
                Ok(v) => stream_item(&v, false),
                Err(e) => stream_error(&e),
            }
        });
        Outcome::Stream(Box::pin(stream))
    }
}

/// An error reply in a reply stream; the stream should end after it.
pub fn stream_error<E: Serialize>(error: &E) -> ReplyStreamItem<Value, Value> {
    (Err(to_value(error).unwrap_or_else(|e| e)), Vec::new())
}

/// One successful reply of a reply stream; `continues` tells the client more will follow.
pub fn stream_item<T: Serialize>(value: &T, continues: bool) -> ReplyStreamItem<Value, Value> {
    let item = to_value(value).map(|v| Reply::new(Some(v)).set_continues(Some(continues)));
    (item, Vec::new())
}

/// Serializes a reply or error; a failure (a bug, not input) becomes an internal error reply.
fn to_value<T: Serialize>(value: &T) -> Result<Value, Value> {
    serde_json::to_value(value).map_err(|e| internal_error(&e.to_string()))
}

/// Credentials of the connected peer, as the kernel recorded them at connect time
/// (SO_PEERCRED, SO_PEERGROUPS): they cannot change or be recycled afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub groups: Vec<u32>,
}

/// Everything about a call besides its method and parameters.
pub struct CallContext {
    pub more: bool,
    pub oneway: bool,
    pub peer: Option<Peer>,
    pub fds: Vec<OwnedFd>,
}

/// One varlink interface served by a [`VarlinkService`].
pub trait Interface {
    /// Fully qualified interface name, e.g. `io.berth.Manager`.
    const NAME: &'static str;

    /// The interface description in varlink IDL.
    fn description(&self) -> &str;

    /// Handles `NAME.<method>`; `parameters` is an object (`{}` when the call had none).
    fn handle(
        &mut self,
        method: &str,
        parameters: Value,
        ctx: CallContext,
    ) -> impl Future<Output = Outcome>;
}

/// What `org.varlink.service.GetInfo` reports.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub vendor: &'static str,
    pub product: &'static str,
    pub version: &'static str,
    pub url: &'static str,
}

/// berth's service identity.
pub const BERTH_INFO: ServiceInfo = ServiceInfo {
    vendor: "berth",
    product: "berth",
    version: env!("CARGO_PKG_VERSION"),
    url: env!("CARGO_PKG_REPOSITORY"),
};

/// Adapts an [`Interface`] to zlink's [`zlink::Service`], answering introspection and every
/// malformed call with a varlink error reply.
pub struct VarlinkService<I> {
    pub interface: I,
    info: ServiceInfo,
}

impl<I: Interface> VarlinkService<I> {
    pub fn new(interface: I, info: ServiceInfo) -> Self {
        VarlinkService { interface, info }
    }

    /// Serves the connections `listener` accepts until it fails. Not `Send` (zlink's server
    /// loop is not): run it on a current-thread runtime or a `LocalSet`.
    pub async fn serve(self, listener: crate::listener::BoundedListener) -> zlink::Result<()> {
        zlink::Server::new(listener, self).run().await
    }

    async fn dispatch(&mut self, call: &Call<RawCall>, ctx: CallContext) -> Outcome {
        let raw = call.method();
        let Some((interface, member)) = raw.method.rsplit_once('.') else {
            return Outcome::Error(varlink_error(
                "MethodNotFound",
                json!({ "method": shown_name(&raw.method) }),
            ));
        };
        let text = raw.parameters.as_ref().map_or("null", |p| p.get());
        if text.len() > MAX_PARAMETERS_BYTES {
            return Outcome::Error(invalid_parameter("parameters"));
        }
        let parameters = match serde_json::from_str(text) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v @ Value::Object(_)) => v,
            // Not an object, or nested deeper than serde_json's recursion limit.
            _ => return Outcome::Error(invalid_parameter("parameters")),
        };
        if interface == "org.varlink.service" {
            return self.introspect(member, &parameters);
        }
        if interface != I::NAME {
            return Outcome::Error(varlink_error(
                "InterfaceNotFound",
                json!({ "interface": shown_name(interface) }),
            ));
        }
        self.interface.handle(member, parameters, ctx).await
    }

    fn introspect(&self, member: &str, parameters: &Value) -> Outcome {
        match member {
            "GetInfo" => Outcome::Reply(
                json!({
                    "vendor": self.info.vendor,
                    "product": self.info.product,
                    "version": self.info.version,
                    "url": self.info.url,
                    "interfaces": ["org.varlink.service", I::NAME],
                }),
                Vec::new(),
            ),
            "GetInterfaceDescription" => {
                match parameters.get("interface").and_then(Value::as_str) {
                    Some(name) if name == I::NAME => Outcome::Reply(
                        json!({ "description": self.interface.description() }),
                        Vec::new(),
                    ),
                    Some("org.varlink.service") => {
                        Outcome::Reply(json!({ "description": VARLINK_SERVICE_IDL }), Vec::new())
                    }
                    Some(other) => Outcome::Error(varlink_error(
                        "InterfaceNotFound",
                        json!({ "interface": shown_name(other) }),
                    )),
                    None => Outcome::Error(invalid_parameter("interface")),
                }
            }
            other => Outcome::Error(varlink_error(
                "MethodNotFound",
                json!({ "method": format!("org.varlink.service.{}", shown_name(other)) }),
            )),
        }
    }
}

impl<I: Interface> zlink::Service<ServerSocket> for VarlinkService<I> {
    type MethodCall<'de> = RawCall;
    type ReplyParams<'ser>
        = Value
    where
        Self: 'ser;
    type ReplyStreamParams = Value;
    type ReplyStreamError = Value;
    type ReplyStream = ReplyStream;
    type ReplyError<'ser>
        = Value
    where
        Self: 'ser;
    type Upgrade = ();

    // Spelled out (not `async fn`): the trait's `MethodCall<'_>` needs the explicit signature.
    #[allow(clippy::manual_async_fn)]
    fn handle<'ser>(
        &'ser mut self,
        call: &'ser Call<Self::MethodCall<'_>>,
        conn: &mut Connection<ServerSocket>,
        fds: Vec<OwnedFd>,
    ) -> impl Future<Output = zlink::service::HandleResult<Value, ReplyStream, Value, ()>> {
        async move {
            let peer = conn.peer_credentials().await.ok().map(|c| Peer {
                uid: c.unix_user_id().as_raw(),
                gid: c.unix_primary_group_id().as_raw(),
                pid: c.process_id().as_raw_nonzero().get(),
                groups: c
                    .unix_supplementary_group_ids()
                    .iter()
                    .map(|g| g.as_raw())
                    .collect(),
            });
            let caller = peer.as_ref().map(|p| (p.uid, p.pid));
            let ctx = CallContext {
                more: call.more(),
                oneway: call.oneway(),
                peer,
                fds,
            };
            let send = !ctx.oneway;
            let queue = conn.write().write_half().queue();
            let outcome = self.dispatch(call, ctx).await;
            if let Outcome::Error(e) = &outcome {
                log_refused(&call.method().method, caller, e);
            }
            let message = match outcome {
                // Descriptors go out through zlink, which passes them (no berth reply has any).
                Outcome::Reply(v, fds) if !fds.is_empty() => {
                    return (MethodReply::Single(Some(v)), fds);
                }
                // zlink sends nothing for a oneway call.
                Outcome::Reply(..) | Outcome::Error(_) if !send => {
                    return (MethodReply::Single(None), Vec::new());
                }
                Outcome::Reply(v, _) => encode(&Reply::new(Some(v)).set_continues(Some(false))),
                Outcome::Error(e) => encode(&e),
                Outcome::Stream(s) => {
                    let s = logging_errors(s, call.method().method.clone(), caller);
                    return (MethodReply::Multi(sent_through(s, queue, send)), Vec::new());
                }
            };
            // The reply goes into the queue now, and zlink's own (a constant `{"continues":
            // false}`) is dropped by the queue. zlink's loop polls reply streams only when no
            // call is waiting to be read, so an empty stream instead would keep a connection
            // from its next call for as long as others keep the daemon busy. A failed push has
            // shut the connection down; zlink drops it at its next read.
            let _ = queue.push_instead_of_next_write(&message);
            (MethodReply::Single(None), Vec::new())
        }
    }
}

/// One message on the wire: `value` as JSON, then NUL. serde_json writes into a growing `Vec`,
/// so this takes time linear in the message's size. (zlink's own serializer starts over with
/// a buffer 256 bytes larger each time a message does not fit, which is quadratic: a 1 MiB
/// reply took seconds, and the daemon serves no one meanwhile.)
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Err(e) = serde_json::to_writer(&mut bytes, value) {
        // Only a bug gets here (a map with non-string keys), never input.
        bytes.clear();
        // A Value with string keys always serializes.
        let _ = serde_json::to_writer(&mut bytes, &internal_error(&e.to_string()));
    }
    bytes.push(0);
    bytes
}

/// Replies of a stream handled at most per poll, so that one fast stream cannot hold the
/// server loop while its client reads as fast as it is sent.
const STREAM_BATCH: usize = 16;

/// Sends the replies of `stream` into its connection's write queue (dropping them for a
/// oneway call), taking the next one only while the queue has room: a client that reads
/// slowly slows only its own stream. Yields to zlink only a reply that carries descriptors,
/// and ends when `stream` does or the connection breaks.
fn sent_through(
    mut stream: ReplyStream,
    queue: std::sync::Arc<crate::write_queue::WriteQueue>,
    send: bool,
) -> ReplyStream {
    use std::task::Poll;
    Box::pin(futures_util::stream::poll_fn(move |cx| {
        for _ in 0..STREAM_BATCH {
            if queue.poll_room(cx).is_pending() {
                return Poll::Pending;
            }
            let (item, fds) = match stream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(item)) => item,
            };
            if !fds.is_empty() {
                return Poll::Ready(Some((item, fds)));
            }
            if !send {
                continue;
            }
            let message = match &item {
                Ok(reply) => encode(reply),
                Err(error) => encode(error),
            };
            if queue.push(&message).is_err() {
                return Poll::Ready(None);
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }))
}

/// Logs an error reply with who called what: a refusal (PermissionDenied) as a warning, any
/// other error at debug level (a missing unit or a malformed call is the caller's business).
/// Each caller's lines are bounded ([`berth_logging::flood`]); `suppressed` counts those left out.
fn log_refused(method: &str, caller: Option<(u32, i32)>, error: &Value) {
    let name = error
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (peer_uid, peer_pid) = (caller.map(|c| c.0), caller.map(|c| c.1));
    let denied = name.ends_with(".PermissionDenied");
    // Only a line that would be written counts against the caller's share.
    let written = if denied {
        tracing::enabled!(Level::WARN)
    } else {
        tracing::enabled!(Level::DEBUG)
    };
    if !written {
        return;
    }
    let Some(suppressed) = berth_logging::flood::allow(peer_uid) else {
        return;
    };
    let suppressed = (suppressed > 0).then_some(suppressed);
    let method = Untrusted(method);
    if denied {
        tracing::warn!(
            %method,
            peer_uid,
            peer_pid,
            error = %Untrusted(name),
            suppressed,
            "call refused"
        );
    } else {
        tracing::debug!(
            %method,
            peer_uid,
            peer_pid,
            error = %Untrusted(name),
            suppressed,
            parameters = %Untrusted(&capped_json(error.get("parameters"))),
            "call failed"
        );
    }
}

/// The error replies of `stream` logged as [`log_refused`] does.
fn logging_errors(stream: ReplyStream, method: String, caller: Option<(u32, i32)>) -> ReplyStream {
    Box::pin(futures_util::StreamExt::inspect(
        stream,
        move |(item, _)| {
            if let Err(error) = item {
                log_refused(&method, caller, error);
            }
        },
    ))
}

/// The start of `value` as JSON text, serialized no further than a log line shows.
fn capped_json(value: Option<&Value>) -> String {
    const ROOM: usize = berth_logging::MAX_FIELD_BYTES - 3;
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = ROOM - self.0.len();
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let n = buf.len().min(room);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut capped = Capped(Vec::new());
    // Stopping early is the point: the error only says the text was cut.
    let cut = serde_json::to_writer(&mut capped, &value.unwrap_or(&Value::Null)).is_err();
    let mut text = String::from_utf8_lossy(&capped.0).into_owned();
    if cut {
        text.push_str("...");
    }
    text
}

/// Parses a method's parameters, mapping a mismatch to `org.varlink.service.InvalidParameter`
/// naming the offending parameter (what varlinkctl shows): the missing or unknown one, or the
/// one whose value has the wrong type or range.
pub fn parse_params<T: DeserializeOwned>(parameters: Value) -> Result<T, Value> {
    let visited = std::cell::RefCell::new(None);
    T::deserialize(TrackedParameters {
        value: parameters,
        visited: &visited,
    })
    .map_err(|e| invalid_parameter(&offending_parameter(&e, visited.into_inner())))
}

/// serde_json names a missing or unknown field in backticks; any other error happened while
/// the value of `visited`, the parameter last read, was being deserialized. An unknown field's
/// name is the caller's (up to [`MAX_PARAMETERS_BYTES`]), so it is cut as every name an error
/// reply shows is.
fn offending_parameter(error: &serde_json::Error, visited: Option<String>) -> String {
    let text = error.to_string();
    let named = text.starts_with("missing field") || text.starts_with("unknown field");
    match (text.split('`').nth(1), visited) {
        (Some(name), _) if named && !name.is_empty() => shown_name(name).to_string(),
        (_, Some(parameter)) if !named => shown_name(&parameter).to_string(),
        _ => "parameters".to_string(),
    }
}

/// Names from a call (method, interface) that an error reply shows are cut to this many bytes:
/// they are the caller's input, and a reply must not grow with it.
pub const MAX_SHOWN_NAME: usize = 256;

/// `name` cut to [`MAX_SHOWN_NAME`] bytes, at a character boundary.
pub fn shown_name(name: &str) -> &str {
    if name.len() <= MAX_SHOWN_NAME {
        return name;
    }
    let mut end = MAX_SHOWN_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The parameters object as a serde deserializer that records the name of each parameter
/// before its value is deserialized, so that an error can name it.
struct TrackedParameters<'a> {
    value: Value,
    visited: &'a std::cell::RefCell<Option<String>>,
}

impl<'de> serde::Deserializer<'de> for TrackedParameters<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Object(map) => visitor.visit_map(TrackedMap {
                entries: map.into_iter(),
                value: None,
                visited: self.visited,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct TrackedMap<'a> {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
    visited: &'a std::cell::RefCell<Option<String>>,
}

impl<'de> serde::de::MapAccess<'de> for TrackedMap<'_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        *self.visited.borrow_mut() = Some(key.clone());
        seed.deserialize(serde::de::IntoDeserializer::<serde_json::Error>::into_deserializer(key))
            .map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(self.value.take().unwrap_or(Value::Null))
    }
}

/// An `org.varlink.service.<name>` error reply.
pub fn varlink_error(name: &str, parameters: Value) -> Value {
    json!({ "error": format!("org.varlink.service.{name}"), "parameters": parameters })
}

/// `org.varlink.service.InvalidParameter` for `parameter`.
pub fn invalid_parameter(parameter: &str) -> Value {
    varlink_error("InvalidParameter", json!({ "parameter": parameter }))
}

fn internal_error(message: &str) -> Value {
    json!({ "error": "io.berth.InternalError", "parameters": { "message": message } })
}

/// The standard description of `org.varlink.service` (varlink.org).
pub const VARLINK_SERVICE_IDL: &str = "interface org.varlink.service

method GetInfo() -> (
  vendor: string,
  product: string,
  version: string,
  url: string,
  interfaces: []string
)

method GetInterfaceDescription(interface: string) -> (description: string)

error InterfaceNotFound (interface: string)

error MethodNotFound (method: string)

error MethodNotImplemented (method: string)

error InvalidParameter (parameter: string)

error PermissionDenied ()

error ExpectedMore ()
";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::listener::ConnectionLimits;
    use crate::listener::test_server::TestServer;

    /// Answers `Big` with a reply of `{"text": <REPLY_BYTES of text>}`, `Stream` with three
    /// replies.
    struct Big;

    const REPLY_BYTES: usize = 3 * 1024 * 1024;

    impl Interface for Big {
        const NAME: &'static str = "io.berth.Test";

        fn description(&self) -> &str {
            "interface io.berth.Test\n"
        }

        async fn handle(&mut self, method: &str, _parameters: Value, _ctx: CallContext) -> Outcome {
            match method {
                "Big" => Outcome::reply(&json!({ "text": "t".repeat(REPLY_BYTES) })),
                _ => Outcome::Stream(Box::pin(futures_util::stream::iter(
                    [true, true, false].map(|continues| stream_item(&json!({}), continues)),
                ))),
            }
        }
    }

    /// Sends `call` and reads replies until one without `"continues":true`, or until the
    /// connection ends or stays silent for `timeout`.
    fn replies(stream: &mut UnixStream, call: &[u8], timeout: Duration) -> Vec<Value> {
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.write_all(call).unwrap();
        let (mut got, mut message, mut chunk) = (Vec::new(), Vec::new(), vec![0u8; 1 << 16]);
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return got,
                Ok(n) => n,
            };
            for &b in &chunk[..n] {
                if b != 0 {
                    message.push(b);
                    continue;
                }
                let reply: Value = serde_json::from_slice(&message).unwrap();
                message.clear();
                let more = reply["continues"] == json!(true);
                got.push(reply);
                if !more {
                    return got;
                }
            }
        }
    }

    /// zlink's serializer took time quadratic in a reply's size (minutes for this one in a
    /// debug build); berth's write path takes a fraction of a second.
    #[test]
    fn a_large_reply_is_sent_in_linear_time() {
        let server = TestServer::start(|| Big, ConnectionLimits::default());
        let mut client = UnixStream::connect(&server.path).unwrap();
        let started = Instant::now();

        let got = replies(
            &mut client,
            b"{\"method\":\"io.berth.Test.Big\"}\0",
            Duration::from_secs(10),
        );

        let took = started.elapsed();
        assert_eq!(got.len(), 1, "no whole reply within 10 s");
        assert_eq!(
            got[0]["parameters"]["text"].as_str().map(str::len),
            Some(REPLY_BYTES)
        );
        assert_eq!(got[0]["continues"], json!(false));
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_stream_sends_every_reply_in_order() {
        let server = TestServer::start(|| Big, ConnectionLimits::default());
        let mut client = UnixStream::connect(&server.path).unwrap();

        let got = replies(
            &mut client,
            b"{\"method\":\"io.berth.Test.Stream\",\"more\":true}\0",
            Duration::from_secs(5),
        );

        let continues: Vec<&Value> = got.iter().map(|r| &r["continues"]).collect();
        assert_eq!(continues, [&json!(true), &json!(true), &json!(false)]);
    }

    #[test]
    fn a_oneway_call_gets_no_reply_even_from_a_stream() {
        let server = TestServer::start(|| Big, ConnectionLimits::default());
        let mut client = UnixStream::connect(&server.path).unwrap();

        let oneway = replies(
            &mut client,
            b"{\"method\":\"io.berth.Test.Stream\",\"more\":true,\"oneway\":true}\0",
            Duration::from_millis(500),
        );
        let after = replies(
            &mut client,
            b"{\"method\":\"org.varlink.service.GetInfo\"}\0",
            Duration::from_secs(5),
        );

        assert!(oneway.is_empty(), "{oneway:?}");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["parameters"]["product"], "berth");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Params {
        unit: String,
    }

    #[test]
    fn a_shown_name_is_cut_at_a_character_boundary() {
        let long = format!("{}é", "a".repeat(MAX_SHOWN_NAME - 1));

        assert_eq!(shown_name(&long), "a".repeat(MAX_SHOWN_NAME - 1));
        assert_eq!(shown_name("io.berth.Manager"), "io.berth.Manager");
    }

    #[test]
    fn missing_field_is_named_in_invalid_parameter() {
        let err = parse_params::<Params>(json!({})).unwrap_err();

        assert_eq!(err["error"], "org.varlink.service.InvalidParameter");
        assert_eq!(err["parameters"]["parameter"], "unit");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Several {
        image: String,
        lines: Option<u32>,
        prefixes: Vec<String>,
    }

    #[test]
    fn wrong_type_names_its_parameter() {
        let err = parse_params::<Params>(json!({ "unit": 3 })).unwrap_err();

        assert_eq!(err["error"], "org.varlink.service.InvalidParameter");
        assert_eq!(err["parameters"]["parameter"], "unit");
    }

    #[test]
    fn the_parameter_that_fails_is_named_among_several() {
        let range = parse_params::<Several>(json!({ "image": "a", "lines": -1, "prefixes": [] }));
        let nested = parse_params::<Several>(json!({ "image": "a", "prefixes": ["p", 7] }));
        let unknown = parse_params::<Several>(json!({ "image": "a", "prefixes": [], "extra": 1 }));
        let missing = parse_params::<Several>(json!({ "lines": 2, "prefixes": [] }));

        let name = |r: Result<Several, Value>| r.unwrap_err()["parameters"]["parameter"].clone();
        assert_eq!(name(range), "lines");
        assert_eq!(name(nested), "prefixes");
        assert_eq!(name(unknown), "extra");
        assert_eq!(name(missing), "image");
    }

    #[test]
    fn a_huge_unknown_parameter_is_named_only_in_part() {
        let huge = "x".repeat(64 * 1024);
        let mut parameters = json!({ "image": "a", "prefixes": [] });
        parameters[&huge] = json!(1);

        let err = parse_params::<Several>(parameters).unwrap_err();

        let named = err["parameters"]["parameter"].as_str().unwrap();
        assert_eq!(named, &huge[..MAX_SHOWN_NAME]);
    }

    #[test]
    fn well_formed_parameters_parse_as_before() {
        let parsed = parse_params::<Several>(json!({ "image": "a", "prefixes": ["p"] })).unwrap();

        assert_eq!(parsed.image, "a");
        assert_eq!(parsed.lines, None);
        assert_eq!(parsed.prefixes, ["p"]);
    }

    #[test]
    fn capped_json_stops_at_the_field_limit() {
        let value = json!({ "unit": "x".repeat(1 << 20) });

        let text = capped_json(Some(&value));

        assert!(
            text.len() <= berth_logging::MAX_FIELD_BYTES,
            "{}",
            text.len()
        );
        assert!(
            text.starts_with("{\"unit\":\"xxx") && text.ends_with("..."),
            "{text}"
        );
    }

    /// Parameters over the limit are refused by their length, before a tree is built of them.
    #[test]
    fn oversized_parameters_are_refused_from_their_text() {
        let server = TestServer::start(|| Big, ConnectionLimits::default());
        let mut client = UnixStream::connect(&server.path).unwrap();
        let mut call = b"{\"method\":\"io.berth.Test.Big\",\"parameters\":{\"a\":[".to_vec();
        call.extend(b"0,".repeat(MAX_PARAMETERS_BYTES / 2));
        call.extend(b"0]}}\0");

        let got = replies(&mut client, &call, Duration::from_secs(10));

        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["error"], "org.varlink.service.InvalidParameter");
        assert_eq!(got[0]["parameters"]["parameter"], "parameters");
    }
}
