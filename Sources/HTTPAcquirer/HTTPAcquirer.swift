import Acquiring
import AsyncHTTPClient
import CardCrypto
import Foundation
import Logging
import MakePayment
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// An acquirer reached over HTTP(S) with a small JSON API, on a pooled AsyncHTTPClient.
///
/// `POST {base}/authorizations`
/// `{"attemptId","reference","pspTransactionId","merchantSerialNumber","amount","currency","pan","expiry"}`
/// → 200 `{"responseCode":"00","authorizationCode":"123456","acquirerReference":"…","message":"…","amount":10000}`
/// (`amount`, optional: the amount approved, in minor units)
///
/// `POST {base}/reversals`
/// `{"reversalId","attemptId","reference","pspTransactionId","merchantSerialNumber","amount","currency","repeat"}`
/// → 200 `{"responseCode":"00"}` (or `"25"`: no such original, nothing to undo)
///
/// `responseCode` is ISO 8583 field 39 and goes through the same table as every adapter. Any other
/// status, a malformed body, a response code that is not two letters or digits or a broken
/// connection is an unknown outcome (the pipeline reverses). A reply's other fields that do not
/// look like themselves, or that hold the card number sent, are dropped (`AcquirerReply.checked`).
public final class HTTPAcquirer: AcquirerAdapter {
    public let name = "http"
    public let baseURL: String
    /// The pool's connections at most (`?connections=`).
    public let connections: Int
    /// How long an idle connection of the pool stays open (`?idle=`).
    public let idleTimeout: Duration
    /// Always its own, set up below: a client of a caller's could follow redirects, use a proxy or
    /// HTTP/2, none of which can be checked from outside it.
    private let client: HTTPClient
    /// A bound on each request of its own, behind the pipeline's deadline.
    public let requestTimeout: Duration
    private let logger: Logger

    /// Connections to the acquirer at most (HTTP/1.1 carries one request at a time on each): a
    /// request past them waits for one, and one that waits past the connect timeout (2 s) fails
    /// as never sent (answered 85). At 250 ms an answer, 256 carry ~1,000 payments a second.
    public static let defaultConnections = 256

    /// How long a connection of the pool may stay idle before it is closed (`?idle=`): shorter
    /// than the acquirer's own keep-alive, so that it is always we who close an idle connection.
    /// A request written on a connection the server was closing at that moment fails as an
    /// unknown outcome (an 85 and a needless reversal); Node's and Apache's servers close after
    /// 5 s idle, Tomcat's after 20, a cloud load balancer's after 60.
    public static let defaultIdleSeconds = 4

    /// The URL as the operator gives it: `http(s)://HOST:PORT[/path][?connections=N&idle=S]`
    /// (N from 1 to 4,096, S seconds from 1 to 3,600, each at most once, in either order); nil
    /// for anything else. The base is what the API's paths are appended to.
    public static func parse(_ url: String) -> (base: String, connections: Int, idleSeconds: Int)? {
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else { return nil }
        var base = Substring(url)
        var connections: Int?, idle: Int?
        if let query = url.firstIndex(of: "?") {
            base = url[..<query]
            for parameter in url[url.index(after: query)...].split(separator: "&", omittingEmptySubsequences: false) {
                if parameter.hasPrefix("connections="), connections == nil, let n = Int(parameter.dropFirst("connections=".count)),
                   (1...4096).contains(n) {
                    connections = n
                } else if parameter.hasPrefix("idle="), idle == nil, let s = Int(parameter.dropFirst("idle=".count)),
                          (1...3600).contains(s) {
                    idle = s
                } else {
                    return nil
                }
            }
        }
        guard !base.contains("#"), URL(string: String(base))?.host != nil else { return nil }
        return (String(base.hasSuffix("/") ? base.dropLast() : base), connections ?? defaultConnections, idle ?? defaultIdleSeconds)
    }

    /// - Parameter baseURL: `http://HOST:PORT[/path]` or `https://…`, with `?connections=N` if
    ///   the pool is to hold other than `defaultConnections`, `idle=S` if its connections are to
    ///   stay open idle other than `defaultIdleSeconds` seconds.
    public init?(baseURL: String, requestTimeout: Duration = .seconds(30),
                 logger: Logger = Logger(label: "psp-worker.http-acquirer")) {
        guard let (base, connections, idleSeconds) = Self.parse(baseURL) else { return nil }
        self.baseURL = base
        self.connections = connections
        idleTimeout = .seconds(idleSeconds)
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: TimeAmount(idleTimeout), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.timeout = .init(connect: .seconds(2), read: TimeAmount(requestTimeout))
        // Card numbers go over this link: no protocol older than TLS 1.2 (NIOSSL's default
        // allows 1.0), as PCI DSS asks.
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        configuration.tlsConfiguration = tls
        // A redirect would post the clear PAN again, to wherever it points (even from https to
        // http), and send the authorization twice: it is an unknown outcome instead.
        configuration.redirectConfiguration = .disallow
        // One request per connection, as `connections` counts them: over HTTP/2 every
        // authorization would share one connection, and one reset would make them all unknown.
        configuration.httpVersion = .http1Only
        self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.requestTimeout = requestTimeout
        self.logger = logger
    }

    deinit {
        // Not syncShutdown: the last reference may go on an event loop thread (workers can run
        // there), where AsyncHTTPClient stops the process rather than block the loop.
        client.shutdown { _ in }
    }

    struct AcquirerReply: Decodable {
        var responseCode: String
        var authorizationCode: String?
        var acquirerReference: String?
        var message: String?
        /// The amount approved (minor units), when the host names it: an approval of another
        /// amount than asked is refused and reversed, as a partial approval is.
        var amount: ApprovedAmount?

        /// A value that is no whole number is -1, as ISO 8583's field 4 is read: another amount,
        /// whatever it meant (not an unreadable reply, which would fail a reversal's answer and
        /// undo a decline too). Absent or null: no amount named.
        struct ApprovedAmount: Decodable {
            let value: Int
            init(from decoder: any Decoder) throws {
                value = (try? decoder.singleValueContainer().decode(Int.self)) ?? -1
            }
        }

        /// The reply as far as it is what the API says: a response code of two letters or digits
        /// (ISO 8583 field 39), or none of it can be read (an unknown outcome). The other fields
        /// go into the store, the logs and the admin API's answers, so one that does not look like
        /// itself (an authorization code of up to 6 letters, digits and spaces, field 38; a reference
        /// or message of printable ASCII) is dropped, and so is any that holds `pan`, the card number
        /// sent (a host or a proxy that echoes the request). Long numbers as such are kept: an
        /// acquirer reference number (ARN) has 23 digits.
        func checked(sent pan: UnsafeRawBufferPointer? = nil) -> AcquirerReply? {
            guard responseCode.utf8.count == 2, responseCode.utf8.allSatisfy(Self.isAlphanumeric) else { return nil }
            var reply = self
            reply.authorizationCode = authorizationCode.flatMap {
                $0.utf8.count <= 6 && $0.utf8.allSatisfy { Self.isAlphanumeric($0) || $0 == 0x20 } ? $0 : nil
            }
            reply.acquirerReference = acquirerReference.flatMap { Self.plain($0, upTo: 64, without: pan) }
            reply.message = message.flatMap { Self.plain($0, upTo: 256, without: pan) }
            return reply
        }

        static func isAlphanumeric(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
        }

        /// `text` if it is printable ASCII, at most `limit` bytes, and does not contain `pan`'s
        /// digits, whatever is between them ("4925 0000 0000 4444", "4925-…" are the PAN too).
        static func plain(_ text: String, upTo limit: Int, without pan: UnsafeRawBufferPointer?) -> String? {
            var text = text
            let fits = text.withUTF8 { bytes -> Bool in
                guard bytes.count <= limit, bytes.allSatisfy({ (0x20...0x7E).contains($0) }) else { return false }
                guard let pan, pan.count > 0, bytes.count >= pan.count else { return true }
                for start in bytes.indices where bytes[start] == pan[0] {
                    var matched = 0, at = start
                    while at < bytes.count, matched < pan.count {
                        if bytes[at] == pan[matched] { matched += 1 } else if (0x30...0x39).contains(bytes[at]) { break }
                        at += 1
                    }
                    if matched == pan.count { return false }
                }
                return true
            }
            return fits ? text : nil
        }
    }

    public func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        // The body is written by hand so the clear PAN and the expiry go from their wiped buffers
        // into the request bytes without passing through a String; our copy is wiped once it is handed over.
        let head = #"{"attemptId":\#(JSONText.quoted(request.attemptId)),"reference":\#(JSONText.quoted(request.attemptReference)),"#
            + #""pspTransactionId":\#(JSONText.quoted(request.pspTransactionId)),"merchantSerialNumber":\#(JSONText.quoted(request.merchantSerialNumber)),"#
            + #""amount":\#(request.amount),"currency":\#(JSONText.quoted(request.currency)),"expiry":""#
        let middle = #"","pan":""#
        let tail = "\"}"
        // Written straight into the one buffer the request sends (`post` wipes it), with room for
        // all of it up front: a buffer that grew after the PAN was in it would leave the old
        // storage, PAN and all, freed unwiped.
        var body = ByteBufferAllocator().buffer(capacity: head.utf8.count + 4 + middle.utf8.count + request.card.pan.count + tail.utf8.count)
        body.writeString(head)
        request.card.expiry.withASCIIDigits { _ = body.writeBytes($0) }
        body.writeString(middle)
        request.card.pan.withASCIIDigits { _ = body.writeBytes($0) }
        body.writeString(tail)
        if AuthorizationDeadline.passed {
            body.withVeryUnsafeBytes(wipeInPlace)
            throw AuthorizationDeadline.notSent
        }
        // Checked again when the client writes the body (`DeadlineGatedBody`): a request may wait
        // for a connection of the pool for up to the connect timeout after this.
        let answered: AcquirerReply = try await post("/authorizations", body, sendBy: AuthorizationDeadline.sendBy)
        guard let reply = request.card.pan.withASCIIDigits({ answered.checked(sent: $0) }) else {
            throw AcquirerUnavailable("HTTP acquirer answered a response code that is not two letters or digits")
        }
        return AcquirerAnswer(responseCode: reply.responseCode, message: reply.message,
                              authorizationCode: reply.authorizationCode, acquirerReference: reply.acquirerReference,
                              scheme: request.scheme, amount: reply.amount?.value)
    }

    public func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        let body = #"{"reversalId":\#(JSONText.quoted(reversal.reversalId)),"attemptId":\#(JSONText.quoted(reversal.attemptId)),"reference":\#(JSONText.quoted(reversal.attemptReference)),"pspTransactionId":\#(JSONText.quoted(reversal.pspTransactionId)),"merchantSerialNumber":\#(JSONText.quoted(reversal.merchantSerialNumber)),"amount":\#(reversal.amount),"currency":\#(JSONText.quoted(reversal.currency)),"repeat":\#(reversal.sendCount > 1)}"#
        let answered: AcquirerReply = try await post("/reversals", ByteBuffer(string: body))
        guard let reply = answered.checked() else {
            throw AcquirerUnavailable("HTTP acquirer answered a response code that is not two letters or digits")
        }
        switch reply.responseCode {
        case "00": return .reversed
        case "25": return .noOriginal
        default: throw AcquirerUnavailable("reversal refused with \(reply.responseCode)")
        }
    }

    /// The errors AsyncHTTPClient fails a request with only while it waits for a connection (its
    /// last connect failure, or a timeout waiting for one): it writes a request on a connection
    /// once one is made, and never retries one it wrote. Such an authorization never left (85,
    /// nothing to reverse). Any other failure is an unknown outcome, a connect failure of another
    /// kind too (an unneeded reversal rather than a missing one); a refused connection is the
    /// common one, and a refusal (a reset in answer to the SYN) cannot come on a connection made.
    static func failedBeforeSending(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let error = error as? IOError { return error.errnoCode == ECONNREFUSED }
        if let error = error as? HTTPClientError { return error == .connectTimeout || error == .getConnectionFromPoolTimeout }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        return false
    }

    /// Sends `sent`, which it wipes (it may hold a clear PAN), and decodes the answer, whose
    /// bytes it wipes as well (a host may echo the card back). With `sendBy`, the body is not
    /// written past it (`DeadlineGatedBody`): the request then fails as never sent.
    private func post<T: Decodable>(_ path: String, _ sent: ByteBuffer, sendBy: ContinuousClock.Instant? = nil) async throws -> T {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let withheld = DeadlineGatedBody.Withheld()
        if let sendBy {
            request.body = .stream(DeadlineGatedBody(body: sent, sendBy: sendBy, withheld: withheld), length: .known(Int64(sent.readableBytes)))
        } else {
            request.body = .bytes(sent)
        }
        // The body may hold a clear PAN: its copy in the request is zeroed once the call is over.
        // A call that failed or was cancelled (the pipeline's deadline) returns before the client
        // has stopped writing on its event loop, so that copy is zeroed a second later instead.
        var answered = false
        defer {
            if answered {
                sent.withVeryUnsafeBytes(wipeInPlace)
            } else {
                // At once if the task cannot be scheduled (the event loop group shutting down).
                client.eventLoopGroup.next().scheduleTask(in: .seconds(1)) { sent.withVeryUnsafeBytes(wipeInPlace) }
                    .futureResult.whenFailure { _ in sent.withVeryUnsafeBytes(wipeInPlace) }
            }
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: TimeAmount(requestTimeout))
        } catch {
            if withheld.value { throw AuthorizationDeadline.notSent }
            throw AcquirerUnavailable("HTTP acquirer: \(error)", neverSent: Self.failedBeforeSending(error))
        }
        // Read into one buffer sized once, each part's bytes wiped as it is taken (a slice of the
        // client's receive buffer, whose decoder has passed them): `collect(upTo:)` grew its first
        // part's buffer, freeing unwiped each copy it outgrew. (NIO's HTTP decoder and, over TLS,
        // NIOSSL keep copies of their own that this cannot reach; one the event loop makes of its
        // buffer while a part is being wiped, when a later chunk's header came split, may keep
        // some of the part's bytes.)
        let limit = 64 * 1024
        let expected = response.headers.first(name: "content-length").flatMap { Int($0) }.map { min(max($0, 0), limit) }
        var bytes = ByteBufferAllocator().buffer(capacity: expected ?? limit)
        defer { bytes.withVeryUnsafeBytes(wipeInPlace) }
        for try await part in response.body {
            defer { part.withUnsafeReadableBytes(wipeInPlace) }
            guard part.readableBytes <= limit - bytes.readableBytes else {
                throw AcquirerUnavailable("HTTP acquirer answered with a body over \(limit) bytes")
            }
            bytes.writeImmutableBuffer(part)
        }
        answered = true
        guard response.status == .ok else { throw AcquirerUnavailable("HTTP acquirer answered \(response.status.code)") }
        do {
            var data = Data(bytes.readableBytesView)
            defer { data.withUnsafeMutableBytes { wipe($0) } }
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw AcquirerUnavailable("HTTP acquirer sent a body that is not the documented JSON")
        }
    }
}

/// An authorization's body, handed to the client when it is about to write it, after the request's
/// head (the client pulls a streamed body then; a `.bytes` body goes out with the head, however
/// long the request waited for a connection of the pool). Past the send deadline it is withheld:
/// the request fails and its connection is closed with the head alone sent, which no server acts
/// on (the amount, the card and the ids are all in the body), so the authorization never left.
struct DeadlineGatedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    /// Set when the body was withheld: the request's failure is that, whatever the client reports.
    final class Withheld: Sendable {
        private let flag = Atomic<Bool>(false)
        var value: Bool { flag.load(ordering: .acquiring) }
        func set() { flag.store(true, ordering: .releasing) }
    }

    let body: ByteBuffer
    let sendBy: ContinuousClock.Instant
    let withheld: Withheld

    struct AsyncIterator: AsyncIteratorProtocol {
        var body: ByteBuffer?
        let sendBy: ContinuousClock.Instant
        let withheld: Withheld

        mutating func next() async throws -> ByteBuffer? {
            guard let body else { return nil }
            self.body = nil
            if ContinuousClock.now >= sendBy {
                withheld.set()
                throw AuthorizationDeadline.notSent
            }
            return body
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: body, sendBy: sendBy, withheld: withheld) }
}
