import Acquiring
import AsyncHTTPClient
import CardCrypto
import Foundation
import Logging
import MakePayment
import NIOCore
import NIOHTTP1
import NIOPosix

/// An acquirer reached over HTTP(S) with a small JSON API, on a pooled AsyncHTTPClient.
///
/// `POST {base}/authorizations`
/// `{"attemptId","reference","pspTransactionId","merchantSerialNumber","amount","currency","pan","expiry"}`
/// → 200 `{"responseCode":"00","authorizationCode":"123456","acquirerReference":"…","message":"…"}`
///
/// `POST {base}/reversals`
/// `{"reversalId","attemptId","reference","pspTransactionId","merchantSerialNumber","amount","currency","repeat"}`
/// → 200 `{"responseCode":"00"}` (or `"25"`: no such original, nothing to undo)
///
/// `responseCode` is ISO 8583 field 39 and goes through the same table as every adapter. Any other
/// status, a malformed body or a broken connection is an unknown outcome (the pipeline reverses).
public final class HTTPAcquirer: AcquirerAdapter {
    public let name = "http"
    public let baseURL: String
    private let client: HTTPClient
    private let ownsClient: Bool
    /// A bound on each request of its own, behind the pipeline's deadline.
    public let requestTimeout: TimeAmount
    private let logger: Logger

    /// - Parameter baseURL: `http://HOST:PORT[/path]` or `https://…`.
    /// - Parameter client: a client of the caller's; it must not follow redirects
    ///   (`redirectConfiguration = .disallow`), or a redirect would post the card elsewhere.
    public init?(baseURL: String, client: HTTPClient? = nil, requestTimeout: TimeAmount = .seconds(30),
                 logger: Logger = Logger(label: "psp-worker.http-acquirer")) {
        guard baseURL.hasPrefix("http://") || baseURL.hasPrefix("https://"), URL(string: baseURL)?.host != nil else { return nil }
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        if let client {
            self.client = client
            ownsClient = false
        } else {
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
            configuration.timeout = .init(connect: .seconds(2), read: requestTimeout)
            // A redirect would post the clear PAN again, to wherever it points (even from https to
            // http), and send the authorization twice: it is an unknown outcome instead.
            configuration.redirectConfiguration = .disallow
            self.client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            ownsClient = true
        }
        self.requestTimeout = requestTimeout
        self.logger = logger
    }

    deinit {
        // Not syncShutdown: the last reference may go on an event loop thread (workers can run
        // there), where AsyncHTTPClient stops the process rather than block the loop.
        if ownsClient { client.shutdown { _ in } }
    }

    struct AuthorizationReply: Decodable {
        var responseCode: String
        var authorizationCode: String?
        var acquirerReference: String?
        var message: String?
    }

    public func authorize(_ request: AuthorizationRequest) async throws -> AcquirerAnswer {
        // The body is written by hand so the clear PAN and the expiry go from their wiped buffers
        // into the request bytes without passing through a String; our copy is wiped once it is handed over.
        let head = #"{"attemptId":\#(JSONText.quoted(request.attemptId)),"reference":\#(JSONText.quoted(request.attemptReference)),"#
            + #""pspTransactionId":\#(JSONText.quoted(request.pspTransactionId)),"merchantSerialNumber":\#(JSONText.quoted(request.merchantSerialNumber)),"#
            + #""amount":\#(request.amount),"currency":\#(JSONText.quoted(request.currency)),"expiry":""#
        let middle = #"","pan":""#
        let tail = "\"}"
        var body = [UInt8]()
        // Room for all of it up front: an array that grew after the PAN was in it would leave
        // the old storage, PAN and all, freed unwiped.
        body.reserveCapacity(head.utf8.count + 4 + middle.utf8.count + request.card.pan.count + tail.utf8.count)
        defer { body.withUnsafeMutableBytes { wipe($0) } }
        body.append(contentsOf: head.utf8)
        request.card.expiry.withASCIIDigits { body.append(contentsOf: $0) }
        body.append(contentsOf: middle.utf8)
        request.card.pan.withASCIIDigits { body.append(contentsOf: $0) }
        body.append(contentsOf: tail.utf8)
        // As late as this adapter can see: the HTTP client's own hop to its event loop follows.
        if AuthorizationDeadline.passed { throw AuthorizationDeadline.notSent }
        let reply: AuthorizationReply = try await post("/authorizations", body)
        return AcquirerAnswer(responseCode: reply.responseCode, message: reply.message,
                              authorizationCode: reply.authorizationCode, acquirerReference: reply.acquirerReference,
                              scheme: request.scheme)
    }

    public func reverse(_ reversal: ReversalRequest) async throws -> ReversalAnswer {
        let body = #"{"reversalId":\#(JSONText.quoted(reversal.reversalId)),"attemptId":\#(JSONText.quoted(reversal.attemptId)),"reference":\#(JSONText.quoted(reversal.attemptReference)),"pspTransactionId":\#(JSONText.quoted(reversal.pspTransactionId)),"merchantSerialNumber":\#(JSONText.quoted(reversal.merchantSerialNumber)),"amount":\#(reversal.amount),"currency":\#(JSONText.quoted(reversal.currency)),"repeat":\#(reversal.sendCount > 1)}"#
        let reply: AuthorizationReply = try await post("/reversals", Array(body.utf8))
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

    private func post<T: Decodable>(_ path: String, _ body: [UInt8]) async throws -> T {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        let sent = ByteBuffer(bytes: body)
        request.body = .bytes(sent)
        // The body may hold a clear PAN: its copy in the request is zeroed once the call is over.
        // A call that failed or was cancelled (the pipeline's deadline) returns before the client
        // has stopped writing on its event loop, so that copy is zeroed a second later instead.
        var answered = false
        defer {
            if answered {
                sent.withVeryUnsafeBytes(wipeInPlace)
            } else {
                client.eventLoopGroup.next().scheduleTask(in: .seconds(1)) { sent.withVeryUnsafeBytes(wipeInPlace) }
            }
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: requestTimeout)
        } catch {
            throw AcquirerUnavailable("HTTP acquirer: \(error)", neverSent: Self.failedBeforeSending(error))
        }
        let bytes = try await response.body.collect(upTo: 64 * 1024)
        answered = true
        guard response.status == .ok else { throw AcquirerUnavailable("HTTP acquirer answered \(response.status.code)") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes.readableBytesView))
        } catch {
            throw AcquirerUnavailable("HTTP acquirer sent a body that is not the documented JSON")
        }
    }
}
