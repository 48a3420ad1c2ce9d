//! The load generator's HTTP/1.1 client: one keep-alive connection, one request at a time,
//! the response head parsed by `httparse`. Not hyper's client, because the generator shares the
//! machine with the systems it measures: hyper's connection state machine, its request and
//! header types and the channel between its sender and its driver cost more per request than
//! the server's own handler does, and every microsecond the generator spends is taken from the
//! system under test. This client builds each request in a reused buffer, writes it with one
//! call and reads the answer into another reused buffer.
//!
//! It speaks only what the generator needs: requests with a body of known length, answers
//! framed by `Content-Length`, `Transfer-Encoding: chunked` or the end of the connection.

use std::io::{self, Write as _};

use httparse::Status;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A response head larger than this is not from a server the generator measures.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The generator's answers are a value or an error line; anything near this is a broken peer.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 64;
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What the generator keeps of an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    /// The body, kept only for statuses other than 2xx and 3xx (its first line names the error).
    pub error_body: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection ended before any byte of the answer: a server closes idle keep-alive
    /// connections, so on a reused connection this calls for one retry on a new one.
    ClosedBeforeAnswer,
    /// Reading or writing failed, or the connection ended in the middle of the answer.
    Transport,
    /// The answer is not HTTP/1.1 this client understands.
    Protocol,
}

/// How the answer's body ends.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

pub struct Link {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    answer: Vec<u8>,
    /// Whether an exchange completed on this connection (see `Failure::ClosedBeforeAnswer`).
    reused: bool,
    /// Whether the server asked to close the connection after the last answer.
    pub closing: bool,
}

impl Link {
    pub async fn connect(authority: &str) -> io::Result<Link> {
        let stream = TcpStream::connect(authority).await?;
        // Requests are one write each; without this, Nagle would hold a request behind the
        // previous answer's delayed ACK.
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            host: authority.to_string(),
            request: Vec::with_capacity(512),
            answer: Vec::with_capacity(READ_CHUNK_BYTES),
            reused: false,
            closing: false,
        })
    }

    /// Sends one request and reads its whole answer.
    pub async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Answer, Failure> {
        self.write_request(method, path, content_type, body);
        self.answer.clear();
        self.stream.write_all(&self.request).await.map_err(|_| self.ended())?;
        let (head_len, head) = loop {
            if self.read_more().await? == 0 {
                return Err(self.ended());
            }
            if let Some(parsed) = parse_head(&self.answer)? {
                break parsed;
            }
            if self.answer.len() > MAX_HEAD_BYTES {
                return Err(Failure::Protocol);
            }
        };
        let body = loop {
            if let Some(body) = complete_body(&self.answer[head_len..], head.framing, false)? {
                break body;
            }
            if self.answer.len() > MAX_ANSWER_BYTES {
                return Err(Failure::Protocol);
            }
            if self.read_more().await? == 0 {
                match complete_body(&self.answer[head_len..], head.framing, true)? {
                    Some(body) => break body,
                    None => return Err(Failure::Transport),
                }
            }
        };
        // One request at a time: bytes beyond the answer are not from a correct server.
        if head_len + body.consumed != self.answer.len() {
            return Err(Failure::Protocol);
        }
        self.reused = true;
        self.closing = head.close || matches!(head.framing, Framing::UntilClose);
        let error_body = (head.status >= 400).then_some(body.content);
        Ok(Answer { status: head.status, location: head.location, error_body })
    }

    fn write_request(&mut self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) {
        let request = &mut self.request;
        request.clear();
        request.extend_from_slice(method.as_bytes());
        request.push(b' ');
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        request.extend_from_slice(self.host.as_bytes());
        if let Some(content_type) = content_type {
            request.extend_from_slice(b"\r\ncontent-type: ");
            request.extend_from_slice(content_type.as_bytes());
        }
        request.extend_from_slice(b"\r\ncontent-length: ");
        let _ = write!(request, "{}\r\n\r\n", body.len());
        request.extend_from_slice(body);
    }

    async fn read_more(&mut self) -> Result<usize, Failure> {
        self.answer.reserve(READ_CHUNK_BYTES);
        // A reset instead of an orderly close tells the same story.
        self.stream.read_buf(&mut self.answer).await.map_err(|_| self.ended())
    }

    /// What it means that the connection ended now: before any byte of the answer on a reused
    /// connection, the server closed it while idle; otherwise the exchange failed.
    fn ended(&self) -> Failure {
        if self.reused && self.answer.is_empty() {
            Failure::ClosedBeforeAnswer
        } else {
            Failure::Transport
        }
    }
}

struct Head {
    status: u16,
    framing: Framing,
    location: Option<String>,
    close: bool,
}

/// The answer's head and its length, once all of it has arrived.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, Head)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(Status::Complete(head_len)) => head_len,
        Ok(Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Protocol),
    };
    let status = response.code.ok_or(Failure::Protocol)?;
    // The generator never sends `Expect`, so an interim answer is a protocol error here.
    if status < 200 {
        return Err(Failure::Protocol);
    }
    let mut length = None;
    let mut chunked = false;
    let mut location = None;
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        let value = header.value;
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(value).map_err(|_| Failure::Protocol)?;
            length = Some(text.trim().parse::<usize>().map_err(|_| Failure::Protocol)?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if header.name.eq_ignore_ascii_case("location") {
            location = std::str::from_utf8(value).ok().map(str::to_string);
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = value.trim_ascii().eq_ignore_ascii_case(b"close");
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Ok(Some((head_len, Head { status, framing, location, close })))
}

struct Body {
    /// Bytes of the message after the head, framing included.
    consumed: usize,
    content: Vec<u8>,
}

/// The body, if `bytes` (everything after the head) holds all of it; `ended`: the connection
/// has closed, which completes a body framed by the close.
fn complete_body(bytes: &[u8], framing: Framing, ended: bool) -> Result<Option<Body>, Failure> {
    match framing {
        Framing::Length(length) if bytes.len() >= length => {
            Ok(Some(Body { consumed: length, content: bytes[..length].to_vec() }))
        }
        Framing::Length(_) => Ok(None),
        Framing::UntilClose if ended => {
            Ok(Some(Body { consumed: bytes.len(), content: bytes.to_vec() }))
        }
        Framing::UntilClose => Ok(None),
        Framing::Chunked => dechunk(bytes),
    }
}

/// Decodes a chunked body (RFC 9112 §7.1) if all of it, trailer section included, is in `bytes`.
fn dechunk(bytes: &[u8]) -> Result<Option<Body>, Failure> {
    let mut content = Vec::new();
    let mut at = 0;
    loop {
        let (size_line_len, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(Status::Complete(parsed)) => parsed,
            Ok(Status::Partial) => return Ok(None),
            Err(_) => return Err(Failure::Protocol),
        };
        at += size_line_len;
        if size == 0 {
            // The trailer section: header lines, then an empty line.
            loop {
                let Some(line_end) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += line_end + 2;
                if line_end == 0 {
                    return Ok(Some(Body { consumed: at, content }));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| Failure::Protocol)?;
        let Some(chunk_end) = at.checked_add(size) else { return Err(Failure::Protocol) };
        if bytes.len() < chunk_end + 2 {
            return Ok(None);
        }
        if &bytes[chunk_end..chunk_end + 2] != b"\r\n" {
            return Err(Failure::Protocol);
        }
        content.extend_from_slice(&bytes[at..chunk_end]);
        at = chunk_end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(text: &str) -> (usize, Head) {
        parse_head(text.as_bytes()).expect("valid").expect("complete")
    }

    #[test]
    fn a_head_is_parsed_only_once_complete() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n").unwrap().is_none());
        let text = "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://a:1/kv/x\r\ncontent-length: 0\r\n\r\n";
        // Followed by body bytes that must not be counted as part of the head.
        let (len, head) = head_of(&format!("{text}xyz"));
        assert_eq!(len, text.len());
        assert_eq!(head.status, 307);
        assert_eq!(head.location.as_deref(), Some("http://a:1/kv/x"));
        assert!(matches!(head.framing, Framing::Length(0)));
        assert!(!head.close);
    }

    #[test]
    fn framing_follows_the_headers() {
        let (_, head) = head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(head.framing, Framing::Chunked));
        let (_, head) = head_of("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert!(matches!(head.framing, Framing::UntilClose));
        assert!(head.close);
        let (_, head) = head_of("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(head.close, "HTTP/1.0 closes unless told otherwise");
        let (_, head) = head_of("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n");
        assert!(matches!(head.framing, Framing::Length(0)), "204 has no body");
    }

    #[test]
    fn malformed_heads_are_protocol_errors() {
        assert_eq!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").err(), Some(Failure::Protocol));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").err(),
            Some(Failure::Protocol)
        );
        assert_eq!(parse_head(b"HTTP/1.1 100 Continue\r\n\r\n").err(), Some(Failure::Protocol));
    }

    #[test]
    fn a_length_framed_body_completes_at_its_length() {
        assert!(complete_body(b"ab", Framing::Length(3), false).unwrap().is_none());
        let body = complete_body(b"abc", Framing::Length(3), false).unwrap().unwrap();
        assert_eq!((body.consumed, body.content.as_slice()), (3, &b"abc"[..]));
        assert!(complete_body(b"abc", Framing::UntilClose, false).unwrap().is_none());
        let body = complete_body(b"abc", Framing::UntilClose, true).unwrap().unwrap();
        assert_eq!(body.content, b"abc");
    }

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let whole = b"4\r\nbusy\r\n6;ext=1\r\n: full\r\n0\r\nx-trailer: 1\r\n\r\n";
        for cut in 0..whole.len() {
            assert!(dechunk(&whole[..cut]).unwrap().is_none(), "incomplete at {cut}");
        }
        let body = dechunk(whole).unwrap().unwrap();
        assert_eq!(body.content, b"busy: full");
        assert_eq!(body.consumed, whole.len());
        assert_eq!(dechunk(b"4\r\nbusyXX0\r\n\r\n").err(), Some(Failure::Protocol));
    }

    #[tokio::test]
    async fn an_exchange_with_a_real_socket_reads_the_whole_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            // Two requests on one connection; the second answer comes in three pieces.
            for answer in [
                &[&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nworld"[..]][..],
                &[
                    &b"HTTP/1.1 503 Service Unavailable\r\ntransfer-"[..],
                    b"encoding: chunked\r\n\r\n5\r\nbusy:",
                    b"\r\n0\r\n\r\n",
                ][..],
            ] {
                let mut buffer = vec![0u8; 4096];
                let read = socket.read(&mut buffer).await.unwrap();
                seen.push(String::from_utf8_lossy(&buffer[..read]).into_owned());
                for piece in answer {
                    socket.write_all(piece).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            seen
        });
        let mut link = Link::connect(&address).await.unwrap();
        let first = link.exchange("PUT", "/kv/k1", None, b"v1").await.unwrap();
        assert_eq!((first.status, first.error_body), (200, None));
        assert!(link.reused);
        let second = link.exchange("GET", "/kv/k1", Some("text/plain"), b"").await.unwrap();
        assert_eq!(second.status, 503);
        assert_eq!(second.error_body.as_deref(), Some(&b"busy:"[..]));
        let seen = server.await.unwrap();
        assert_eq!(
            seen[0],
            format!("PUT /kv/k1 HTTP/1.1\r\nhost: {address}\r\ncontent-length: 2\r\n\r\nv1")
        );
        assert!(seen[1].starts_with("GET /kv/k1 HTTP/1.1\r\n"));
        assert!(seen[1].contains("content-type: text/plain\r\n"));
        // The server has gone: the next exchange on the reused connection says so.
        assert_eq!(
            link.exchange("GET", "/kv/k1", None, b"").await.err(),
            Some(Failure::ClosedBeforeAnswer)
        );
    }
}
