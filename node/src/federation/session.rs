//! Both halves of the `causeway/fed/1` handshake over an iroh connection, and one-request
//! streams after it, control requests ahead of bulk ones. The checks themselves are the pure
//! ones in `causeway_proto::fed`.

use std::time::Duration;

use causeway_proto::{
    EndpointKey,
    card::SignedCard,
    fed::{Auth, Expectation, FedRequest, FedResponse, Hello, HelloReply, MAX_FED_FRAME, Welcome, check_peer, prove},
};
use causeway_raft::wire;
use iroh::endpoint::Connection;

/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request (heartbeat, card update) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream priority of control requests (heartbeats, card updates, change notifications, push
/// offers, goodbyes): QUIC sends a stream's buffered bytes before those of lower-priority
/// streams on the same connection, so control never queues behind bulk work. (Content itself
/// moves over iroh-blobs connections of its own.)
pub const CONTROL_PRIORITY: i32 = 1;
/// Stream priority of requests that start bulk work: catalog pages, a write-back's bundle.
pub const BULK_PRIORITY: i32 = 0;

/// The stream priority a request gets (the answering side can give its answer the same).
pub fn priority(req: &FedRequest) -> i32 {
    match req {
        FedRequest::CatalogQuery { .. } | FedRequest::WriteBack { .. } => BULK_PRIORITY,
        FedRequest::Heartbeat { .. }
        | FedRequest::CardUpdate(_)
        | FedRequest::CatalogChanged { .. }
        | FedRequest::PushOffer { .. }
        | FedRequest::CatalogLookup { .. }
        | FedRequest::Goodbye { .. } => CONTROL_PRIORITY,
    }
}

/// This cluster's credentials for a handshake.
pub struct OwnSide {
    pub endpoint: EndpointKey,
    pub card: SignedCard,
    pub secret: [u8; 32],
}

/// What the dialer learned from a successful handshake.
pub struct Dialed {
    pub card: SignedCard,
    pub links_back: bool,
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The dialer's half: verify the listener's card and proof, prove ourselves, await the verdict.
pub async fn dial_handshake(conn: &Connection, own: &OwnSide, expect: &Expectation) -> Result<Dialed, String> {
    let remote = EndpointKey(*conn.remote_id().as_bytes());
    let (mut send, mut recv) = conn.open_bi().await.map_err(s)?;
    let challenge: [u8; 32] = rand::random();
    wire::write_frame(&mut send, &Hello { challenge }, MAX_FED_FRAME)
        .await
        .map_err(s)?;
    let reply: HelloReply = wire::read_frame(&mut recv, MAX_FED_FRAME).await.map_err(s)?;
    let (card, proof, their_challenge) = match reply {
        HelloReply::Card { card, proof, challenge } => (*card, proof, challenge),
        HelloReply::Refused(r) => return Err(format!("peer refused the handshake: {r}")),
    };
    check_peer(&card, &proof, &challenge, &remote, &own.endpoint, expect).map_err(|e| format!("refused peer: {e}"))?;
    let my_proof = prove(&own.secret, &their_challenge, &own.endpoint, &remote, &own.card.card);
    let auth = Auth {
        card: own.card.clone(),
        proof: my_proof,
    };
    wire::write_frame(&mut send, &auth, MAX_FED_FRAME).await.map_err(s)?;
    send.finish().map_err(s)?;
    match wire::read_frame::<Welcome>(&mut recv, MAX_FED_FRAME).await.map_err(s)? {
        Welcome::Accepted { links_back } => Ok(Dialed { card, links_back }),
        Welcome::Refused(r) => Err(format!("peer refused us: {r}")),
    }
}

/// One request on its own stream (at the request's [`priority`]), answered by one response.
pub async fn request(conn: &Connection, req: &FedRequest) -> Result<FedResponse, String> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(s)?;
        // Fails only on a stream already closed, which the write below reports.
        let _ = send.set_priority(priority(req));
        wire::write_frame(&mut send, req, MAX_FED_FRAME).await.map_err(s)?;
        send.finish().map_err(s)?;
        wire::read_frame::<FedResponse>(&mut recv, MAX_FED_FRAME)
            .await
            .map_err(s)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "request timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_requests_go_ahead_of_bulk_ones() {
        let control = FedRequest::CatalogChanged { changes: Vec::new() };
        let bulk = FedRequest::CatalogQuery { after: None, limit: 1 };
        assert!(priority(&control) > priority(&bulk));
        assert_eq!(
            priority(&FedRequest::Heartbeat { seq: 1, card_epoch: 1 }),
            CONTROL_PRIORITY
        );
    }
}
