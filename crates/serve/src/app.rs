//! The router, the shared state of the handlers, and the server's life:
//! bind, serve until Ctrl-C or SIGTERM, end the event streams, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, RawQuery, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::serve::ListenerExt;
use axum::Router;
use bus::EventBus;
use seed_event::{Error, EventStore, Topic};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::args::{Config, ServeArgs};
use crate::error::{ensure_json_error, json_response, ApiError, StoreFailed};
use crate::metrics::Metrics;
use crate::sse::Hubs;
use crate::{auth, console, events, groups, openapi, sse, states};

/// How long in-flight requests may take to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(10);

/// What every handler shares: one reference-counted value, cloned per request.
#[derive(Clone)]
pub struct App(Arc<Shared>);

impl std::ops::Deref for App {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`App`].
pub struct Shared {
    /// The bus over the store the CLI chose.
    pub bus: Arc<EventBus>,
    /// The checked configuration.
    pub config: Arc<Config>,
    /// The counters of `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The live-stream fan-out.
    pub hubs: Arc<Hubs>,
    /// The group commit of single-event publishes.
    pub appender: crate::appender::Appender,
    /// The work-group members held for HTTP workers.
    pub members: Arc<groups::Members>,
    /// One permit per state watch that may be open.
    pub state_watches: Arc<tokio::sync::Semaphore>,
    /// Becomes true when the server stops; event streams end then.
    pub shutdown: watch::Receiver<bool>,
    /// The runtime, for blocking work.
    pub runtime: tokio::runtime::Handle,
}

impl App {
    /// Runs blocking bus or store work off the runtime's threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.runtime.spawn_blocking(work).await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("request failed: {e}"))
        })
    }
}

/// The API's operations: path, method and handler. The OpenAPI document
/// describes exactly these (a test compares them).
fn api() -> Vec<(&'static str, Method, MethodRouter<App>)> {
    vec![
        ("/healthz", Method::GET, get(healthz)),
        ("/metrics", Method::GET, get(metrics)),
        ("/v1/openapi.json", Method::GET, get(openapi::document)),
        ("/v1/topics", Method::GET, get(topics)),
        ("/v1/stats", Method::GET, get(stats)),
        ("/v1/topics/{topic}/events", Method::POST, post(events::publish)),
        ("/v1/events", Method::GET, get(events::history)),
        ("/v1/subscribe", Method::GET, get(sse::subscribe)),
        ("/v1/groups", Method::GET, get(groups::list)),
        ("/v1/groups/{group}/fetch", Method::POST, post(groups::fetch)),
        ("/v1/groups/{group}/ack", Method::POST, post(groups::ack)),
        ("/v1/groups/{group}/nack", Method::POST, post(groups::nack)),
        ("/v1/groups/{group}/in-progress", Method::POST, post(groups::in_progress)),
        ("/v1/groups/{group}/redrive", Method::POST, post(groups::redrive)),
        ("/v1/state/{type}", Method::POST, post(states::create)),
        ("/v1/state/{type}", Method::GET, get(states::list)),
        ("/v1/state/{type}/watch", Method::GET, get(states::watch)),
        ("/v1/state/{type}/{id}", Method::GET, get(states::get)),
        ("/v1/state/{type}/{id}", Method::PUT, put(states::update)),
        ("/v1/state/{type}/{id}", Method::DELETE, delete(states::delete)),
        ("/v1/state/{type}/{id}/history", Method::GET, get(states::history)),
    ]
}

/// The path and method of every API operation.
#[cfg(test)]
pub(crate) fn operations() -> Vec<(&'static str, Method)> {
    api().into_iter().map(|(path, method, _)| (path, method)).collect()
}

/// The whole application: API, console, and the layers around them.
pub(crate) fn router(app: App) -> Router {
    let mut router = Router::new();
    for (path, _, handler) in api() {
        router = router.route(path, handler);
    }
    router = console::routes(router).fallback(not_found);
    if let Some(origin) = app.config.cors.clone() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    "last-event-id".parse().unwrap(),
                ])
                .expose_headers([header::ETAG]),
        );
    }
    router
        .layer(middleware::from_fn_with_state(app.clone(), auth::require_token))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(app.config.max_body))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Times the request, counts store failures, and gives every error the JSON shape.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    if response.extensions().get::<StoreFailed>().is_some() {
        app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
    }
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    app.metrics.request(method.as_str(), route, started.elapsed());
    ensure_json_error(response)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such resource; the API is described at /v1/openapi.json",
    )
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.to_string())
}

async fn metrics(State(app): State<App>) -> Response {
    let bus = app.bus.clone();
    let groups = match app.blocking(move || bus.groups()).await {
        Ok(Ok(groups)) => groups,
        Ok(Err(e)) => {
            log::warn!("/metrics without work groups: {e}");
            app.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        }
        Err(_) => Vec::new(),
    };
    let mut response = app.metrics.render(&groups).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn topics(State(app): State<App>) -> Result<Response, ApiError> {
    let bus = app.bus.clone();
    let topics = app.blocking(move || bus.list_topics()).await??;
    let names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
    Ok(json_response(StatusCode::OK, serde_json::to_string(&names).unwrap_or_default()))
}

async fn stats(State(app): State<App>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let mut topic = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "topic" => topic = Some(Topic::new(value.as_ref())?),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected topic"
                )))
            }
        }
    }
    let bus = app.bus.clone();
    let stats = app.blocking(move || bus.stats(topic.as_ref())).await??;
    Ok(json_response(StatusCode::OK, serde_json::to_string(&stats).unwrap_or_default()))
}

/// A bound server, ready to serve.
pub struct Server {
    listener: TcpListener,
    app: App,
    stop: watch::Sender<bool>,
}

impl Server {
    /// Binds `config.listen` and sets up the application over `bus`.
    pub async fn bind(bus: Arc<EventBus>, config: Config) -> seed_event::Result<Server> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(format!("listening on {}", config.listen), e))?;
        let metrics = Arc::new(Metrics::default());
        let (stop, shutdown) = watch::channel(false);
        let app = App(Arc::new(Shared {
            hubs: Arc::new(Hubs::new(bus.clone(), config.stream_buffer, metrics.clone())),
            appender: crate::appender::Appender::start(bus.clone())?,
            members: Arc::default(),
            state_watches: Arc::new(tokio::sync::Semaphore::new(config.max_state_watches)),
            bus,
            config: Arc::new(config),
            metrics,
            shutdown,
            runtime: tokio::runtime::Handle::current(),
        }));
        Ok(Server { listener, app, stop })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> seed_event::Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::io("reading the listening address", e))
    }

    /// Serves until `signal` completes, then stops accepting, ends the event
    /// streams and waits up to 10 s for the requests in flight.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> seed_event::Result<()> {
        let Server { listener, app, stop } = self;
        let hubs = app.hubs.clone();
        let members = app.members.clone();
        let mut stopping_rx = app.shutdown.clone();
        let service = router(app).into_make_service();
        // Event-stream frames and small replies go out at once: with Nagle's
        // algorithm a frame written while an earlier one is unacknowledged
        // waits for the client's delayed ACK (up to 40 ms on Linux).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                log::debug!("cannot set TCP_NODELAY on a connection: {e}");
            }
        });
        let stopping = async move {
            signal.await;
            let _ = stop.send(true);
        };
        let server = axum::serve(listener, service).with_graceful_shutdown(stopping);
        tokio::select! {
            result = server => result.map_err(|e| Error::io("serving HTTP", e))?,
            _ = async { stopped(&mut stopping_rx).await; tokio::time::sleep(GRACE).await } => {
                log::warn!("requests still running {}s after the stop signal were cut off", GRACE.as_secs());
            }
        }
        tokio::task::spawn_blocking(move || {
            hubs.stop_all();
            members.clear();
        })
        .await
        .ok();
        Ok(())
    }
}

/// Completes once the server is stopping.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Listens for Ctrl-C (SIGINT) and SIGTERM from now on (before the ready
/// line is printed, so a signal right after it is not fatal); the future
/// completes at the first of them.
fn stop_signal() -> seed_event::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen =
        |kind: SignalKind| signal(kind).map_err(|e| Error::io("listening for stop signals", e));
    let (mut interrupt, mut terminate) =
        (listen(SignalKind::interrupt())?, listen(SignalKind::terminate())?);
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// `seed serve`: serves the bus over `store` until Ctrl-C or SIGTERM.
///
/// Writes `Serving on http://HOST:PORT` to stderr once it accepts requests.
/// A non-loopback address without a token is invalid input (nothing is bound).
pub fn run(store: Arc<dyn EventStore>, args: &ServeArgs) -> seed_event::Result<()> {
    let config = Config::from_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the server's runtime", e))?;
    let bus = Arc::new(EventBus::new(store));
    let result = runtime.block_on(async {
        let server = Server::bind(bus.clone(), config).await?;
        let stop = stop_signal()?;
        eprintln!("Serving on http://{}", server.local_addr()?);
        server.run(stop).await
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    bus.close();
    result
}
