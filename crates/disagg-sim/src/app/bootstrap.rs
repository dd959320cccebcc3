//! The SGLang bootstrap: a context server marks a room done when its prefill is, and a
//! generation server long-polls that room before it decodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use disagg_protocol::Sampling;
use tokio::sync::Notify;

use super::error::ApiError;
use super::{AppState, SimConfig};

#[derive(Default)]
pub(super) struct Room {
    done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

const ROOMS_KEEP: usize = 100_000;

pub(super) fn mark_room_done(st: &AppState, room: &str) {
    let Ok(mut rooms) = st.rooms.lock() else {
        return;
    };
    if rooms.len() >= ROOMS_KEEP {
        rooms.retain(|_, r| !r.done.load(Ordering::Relaxed));
    }
    let r = rooms.entry(room.to_string()).or_default().clone();
    r.done.store(true, Ordering::Release);
    r.notify.notify_waiters();
}

#[derive(serde::Deserialize)]
pub(super) struct WaitQuery {
    timeout_ms: Option<u64>,
}

/// SGLang hand-off: a decode server long-polls its prefill server until the room's prefill is
/// done.
pub(super) async fn bootstrap(
    State(st): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(q): Query<WaitQuery>,
) -> StatusCode {
    let r = {
        let Ok(mut rooms) = st.rooms.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        rooms.entry(room.clone()).or_default().clone()
    };
    let deadline = Duration::from_millis(q.timeout_ms.unwrap_or(60_000));
    let wait = async {
        loop {
            let notified = r.notify.notified();
            if r.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    };
    match tokio::time::timeout(deadline, wait).await {
        Ok(()) => {
            if let Ok(mut rooms) = st.rooms.lock() {
                rooms.remove(&room);
            }
            StatusCode::OK
        }
        Err(_) => StatusCode::REQUEST_TIMEOUT,
    }
}

pub(super) async fn wait_for_prefill(cfg: &SimConfig, s: &Sampling) -> Result<(), ApiError> {
    let (Some(host), Some(port), Some(room)) =
        (&s.bootstrap_host, &s.bootstrap_port, &s.bootstrap_room)
    else {
        return Err(ApiError::bad(
            "a decode request needs bootstrap_host, bootstrap_port and bootstrap_room",
        ));
    };
    let host = host.as_str().unwrap_or("127.0.0.1").to_string();
    let port = port.as_u64().ok_or_else(|| {
        ApiError::bad(
            "bootstrap_port is null: start the router with the prefill server's bootstrap port",
        )
    })?;
    let path = format!(
        "/disagg_sim/bootstrap/{room}?timeout_ms={}",
        cfg.bootstrap_timeout.as_millis()
    );
    let status = crate::client::get_status(
        &host,
        port as u16,
        &path,
        cfg.bootstrap_timeout + Duration::from_secs(5),
    )
    .await
    .map_err(|e| ApiError {
        status: StatusCode::BAD_GATEWAY,
        message: format!("cannot reach the prefill server's bootstrap at {host}:{port}: {e}"),
    })?;
    if status != 200 {
        return Err(ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!(
                "the prefill of bootstrap_room {room} did not complete (bootstrap answered {status})"
            ),
        });
    }
    Ok(())
}
