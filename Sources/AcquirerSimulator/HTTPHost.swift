import Foundation
import Hummingbird
import Logging
import MakePayment

/// The HTTP JSON side of the simulated acquirer (the API `HTTPAcquirer` documents):
/// `POST /authorizations`, `POST /reversals`, and `GET /journal` for tests and scripts.
public enum HTTPHost {
    struct Authorization: Decodable {
        var reference: String
        var pan: String
    }
    struct Reversal: Decodable {
        var reference: String
        var `repeat`: Bool?
    }

    /// The router, for `Application(router:)`; the RRN of an HTTP attempt is its `reference`.
    public static func router(host: AcquirerHost) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        let decoder = JSONDecoder()
        router.post("/authorizations") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 64 * 1024)
            guard let authorization = try? decoder.decode(Authorization.self, from: body) else {
                return json(.badRequest, #"{"error":"not an authorization"}"#)
            }
            let decision = host.authorize(rrn: authorization.reference, panDigits: Array(authorization.pan.utf8))
            guard let code = decision.responseCode else {
                // Never answers: hold the request until the client gives up.
                try await Task.sleep(for: .seconds(3600))
                return json(.gatewayTimeout, "{}")
            }
            if decision.delay > .zero { try await Task.sleep(for: decision.delay) }
            let authorizationCode = decision.authorizationCode.map { #","authorizationCode":"\#($0)""# } ?? ""
            return json(.ok, #"{"responseCode":"\#(code)"\#(authorizationCode),"acquirerReference":\#(JSONText.quoted(authorization.reference))}"#)
        }
        router.post("/reversals") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 64 * 1024)
            guard let reversal = try? decoder.decode(Reversal.self, from: body) else {
                return json(.badRequest, #"{"error":"not a reversal"}"#)
            }
            let known = host.reverse(rrn: reversal.reference, repeat: reversal.repeat ?? false)
            let delay = host.replyDelay  // drawn once: jitter makes each read differ
            if delay > .zero { try await Task.sleep(for: delay) }
            return json(.ok, #"{"responseCode":"\#(known ? "00" : "25")"}"#)
        }
        router.get("/journal") { _, _ -> Response in
            let data = try host.journal.json()
            return json(.ok, String(decoding: data, as: UTF8.self))
        }
        return router
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

extension HTTPHost {
    /// A running HTTP host: its port, and the task to cancel to stop it.
    public struct Running: Sendable {
        public let port: Int
        public let task: Task<Void, any Error>
    }

    /// Starts the HTTP host (port 0: any free port) and returns once it listens.
    public static func start(host: AcquirerHost, address: String = "127.0.0.1", port: Int,
                             logger: Logger = Logger(label: "acquirer-sim.http")) async throws -> Running {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        var quiet = logger
        quiet.logLevel = .warning
        let app = Application(
            router: router(host: host),
            configuration: .init(address: .hostname(address, port: port), serverName: "acquirer-sim"),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? port); continuation.finish() },
            logger: quiet)
        let task = Task { try await app.run() }
        for await bound in ports { return Running(port: bound, task: task) }
        task.cancel()
        throw CancellationError()
    }
}
