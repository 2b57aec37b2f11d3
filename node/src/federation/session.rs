//! Both halves of the `causeway/fed/2` handshake over an iroh connection, and one-request
//! streams after it, control requests ahead of bulk ones. The checks themselves are the pure
//! ones in `causeway_proto::fed`.

use std::time::Duration;

use causeway_proto::{
    EndpointKey,
    fed::{
        Auth, Expectation, FedRequest, FedResponse, HandshakeError, Hello, HelloReply, MAX_FED_FRAME, Welcome,
        check_card, prove, verify_proof,
    },
    rotation::{KeyVerdict, KeyedCard},
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

/// This cluster's credentials for a handshake: its card under its current key, and that key's
/// secret.
pub struct OwnSide {
    pub endpoint: EndpointKey,
    pub card: KeyedCard,
    pub secret: [u8; 32],
}

/// What the dialer learned from a successful handshake.
pub struct Dialed {
    pub card: KeyedCard,
    pub links_back: bool,
    pub verdict: KeyVerdict,
}

/// Why a dial's handshake failed; `Refused` carries the check that failed on our side.
#[derive(Debug)]
pub enum DialError {
    Refused(HandshakeError),
    /// The listener's full card was refused (kept: a key conflict is recorded with it).
    RefusedCard(HandshakeError, Box<KeyedCard>),
    Other(String),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Refused(e) | DialError::RefusedCard(e, _) => write!(f, "refused peer: {e}"),
            DialError::Other(e) => f.write_str(e),
        }
    }
}

impl From<String> for DialError {
    fn from(e: String) -> Self {
        DialError::Other(e)
    }
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The dialer's half: check the listener's proof, prove ourselves, then check the full card the
/// listener sends once it accepted us against the key it proved.
pub async fn dial_handshake(conn: &Connection, own: &OwnSide, expect: &Expectation) -> Result<Dialed, DialError> {
    let remote = EndpointKey(*conn.remote_id().as_bytes());
    let (mut send, mut recv) = conn.open_bi().await.map_err(s)?;
    let challenge: [u8; 32] = rand::random();
    wire::write_frame(&mut send, &Hello { challenge }, MAX_FED_FRAME)
        .await
        .map_err(s)?;
    let reply: HelloReply = wire::read_frame(&mut recv, MAX_FED_FRAME).await.map_err(s)?;
    let (cluster_id, key, proof, their_challenge) = match reply {
        HelloReply::Card {
            cluster_id,
            key,
            proof,
            challenge,
        } => (cluster_id, key, proof, challenge),
        HelloReply::Refused(r) => return Err(format!("peer refused the handshake: {r}").into()),
    };
    verify_proof(&cluster_id, &key, &proof, &challenge, &remote, &own.endpoint).map_err(DialError::Refused)?;
    if let Some(pinned) = expect.pinned
        && pinned != cluster_id
    {
        return Err(DialError::Refused(HandshakeError::PinnedMismatch {
            pinned,
            presented: cluster_id,
        }));
    }
    let my_proof = prove(
        &own.secret,
        &their_challenge,
        &own.endpoint,
        &remote,
        &own.card.cluster_id(),
        &own.card.key,
    );
    let auth = Auth {
        card: own.card.clone(),
        proof: my_proof,
    };
    wire::write_frame(&mut send, &auth, MAX_FED_FRAME).await.map_err(s)?;
    send.finish().map_err(s)?;
    let (card, links_back) = match wire::read_frame::<Welcome>(&mut recv, MAX_FED_FRAME).await.map_err(s)? {
        Welcome::Accepted { links_back, card } => (*card, links_back),
        Welcome::Refused(r) => return Err(format!("peer refused us: {r}").into()),
    };
    if card.cluster_id() != cluster_id || card.key != key {
        return Err(DialError::Refused(HandshakeError::CardNotProved(
            "another cluster or key".into(),
        )));
    }
    let verdict = match check_card(&card, &remote, expect) {
        Ok(v) => v,
        Err(e) => return Err(DialError::RefusedCard(e, Box::new(card))),
    };
    Ok(Dialed {
        card,
        links_back,
        verdict,
    })
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
