import AcquirerConformance
import AcquirerSimulator
import Acquiring
import AsyncHTTPClient
import Foundation
@testable import HTTPAcquirer
import Hummingbird
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The HTTP JSON adapter against the simulated acquirer's HTTP side on a real loopback socket.
/// Request/response HTTP has no late, duplicate or half-closed replies to inject: those checks are
/// the ISO 8583 adapter's; here it runs the checks without faults.
final class HTTPSubject: AcquirerConformanceSubject {
    let host = AcquirerHost()
    let running: HTTPHost.Running
    let http: HTTPAcquirer
    var adapter: any AcquirerAdapter { http }

    init() async throws {
        running = try await HTTPHost.start(host: host, port: 0)
        http = HTTPAcquirer(baseURL: "http://127.0.0.1:\(running.port)")!
    }

    func authorizations(of attempt: AttemptIdentity) async -> Int { host.authorizationCount(rrn: attempt.attemptReference) }
    func reversals(of attempt: AttemptIdentity) async -> Int { host.reversalCount(rrn: attempt.attemptReference) }
    func setFaults(_ faults: ConformanceFaults) async -> Bool { faults == ConformanceFaults() }
}

@Suite struct HTTPAcquirerTests {
    @Test(arguments: AcquirerConformance.checksWithoutFaults)
    func conformance(_ check: AcquirerConformance.Check) async throws {
        let subject = try await HTTPSubject()
        defer { subject.running.task.cancel() }  // failed or not
        try await check.run(AcquirerConformance(subject: subject))
    }

    /// A test card's request for an adapter of this suite's own: the HTTP adapter's attempt
    /// reference is the attempt id (`AcquirerAdapter`'s default).
    static func request() throws -> AuthorizationRequest {
        try AcquirerConformance.request(code: "00", attemptReference: { $0 })
    }

    /// The last reference may go on an event loop thread (the worker's workers can run there):
    /// the adapter's client then shuts down without blocking the loop. (syncShutdown there stops
    /// the process: AsyncHTTPClient's precondition.)
    @Test func droppedOnAnEventLoopItShutsDownWithoutStoppingTheProcess() async throws {
        let dropped = try await MultiThreadedEventLoopGroup.singleton.next().submit {
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:1")
            return adapter != nil
        }.get()
        #expect(dropped)
    }

    /// A context that knows which connection a request came on.
    struct ConnectionContext: RequestContext {
        var coreContext: CoreRequestContextStorage
        let clientPort: Int?
        init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
            clientPort = source.channel.remoteAddress?.port
        }
    }

    /// The pool closes a connection idle longer than `idle=` (4 s by default, below the 5 s
    /// after which Node's or Apache's servers close one): the next authorization goes out on a
    /// new connection. It kept them 60 s, so a server closing after 5 s could close one just as a
    /// request went out on it (an unknown outcome: 85 and a needless reversal).
    @Test func anIdleConnectionIsClosedAfterTheIdleTimeout() async throws {
        let ports = Mutex<[Int?]>([])
        let router = Router(context: ConnectionContext.self)
        router.post("/authorizations") { _, context -> Response in
            ports.withLock { $0.append(context.clientPort) }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"responseCode":"00"}"#)))
        }
        let requests = try (0..<3).map { _ in try Self.request() }
        try await Self.withHost(router) { (port: Int) async throws in
            // Idle 2 s, then 5 s idle: wide margins either side, for a loaded machine.
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)?idle=2&connections=1")!
            #expect(adapter.idleTimeout == .seconds(2))
            #expect(try await adapter.authorize(requests[0]).responseCode == "00")
            #expect(try await adapter.authorize(requests[1]).responseCode == "00")  // at once: the same connection
            try await Task.sleep(for: .seconds(5))
            #expect(try await adapter.authorize(requests[2]).responseCode == "00")
        }
        let seen = ports.withLock { $0 }
        #expect(seen.count == 3 && seen.allSatisfy { $0 != nil })
        #expect(seen[0] == seen[1], "an authorization right after another took a new connection")
        #expect(seen[1] != seen[2], "the connection idle past the idle timeout was used again")
    }

    @Test func urlsAreChecked() {
        #expect(HTTPAcquirer(baseURL: "http://127.0.0.1:8090")?.connections == HTTPAcquirer.defaultConnections)
        #expect(HTTPAcquirer(baseURL: "https://acquirer.example/api/")?.baseURL == "https://acquirer.example/api")
        #expect(HTTPAcquirer(baseURL: "iso8583://x:1") == nil)
        let pooled = HTTPAcquirer(baseURL: "https://acquirer.example/api/?connections=8")
        #expect(pooled?.baseURL == "https://acquirer.example/api" && pooled?.connections == 8)
        #expect(pooled?.idleTimeout == .seconds(Int64(HTTPAcquirer.defaultIdleSeconds)) && HTTPAcquirer.defaultIdleSeconds < 5)
        let both = HTTPAcquirer(baseURL: "https://acquirer.example/api?idle=30&connections=8")
        #expect(both?.connections == 8 && both?.idleTimeout == .seconds(30))
        // A query the paths would be appended after, or a pool of none or of thousands, is refused.
        for url in ["http://127.0.0.1:8090?connections=0", "http://127.0.0.1:8090?connections=5000", "http://127.0.0.1:8090?pool=8",
                    "http://127.0.0.1:8090?connections=8&x=1", "http://127.0.0.1:8090/#frag", "http://127.0.0.1:8090?idle=0",
                    "http://127.0.0.1:8090?idle=3601", "http://127.0.0.1:8090?idle=5&idle=6", "http://127.0.0.1:8090?connections=8&",
                    "http://127.0.0.1:8090?connections=8&connections=9"] {
            #expect(HTTPAcquirer(baseURL: url) == nil, "\(url)")
        }
    }

    /// More authorizations at once than a small pool had (64) all reach a slow acquirer: past the
    /// pool, one waited for a connection longer than the connect timeout and failed unsent (85).
    @Test func aSlowAcquirerGetsEveryAuthorizationOfABurst() async throws {
        let arrived = Atomic<Int>(0)
        let router = Router()
        router.post("/authorizations") { _, _ -> Response in
            arrived.add(1, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(2500))  // past the 2 s a request may wait for a connection
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"responseCode":"00","authorizationCode":"123456"}"#)))
        }
        let requests = try (0..<80).map { _ in try Self.request() }
        try await Self.withHost(router) { (port: Int) async throws in
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)")!
            let codes = await withTaskGroup(of: String?.self) { group in
                for request in requests { group.addTask { try? await adapter.authorize(request).responseCode } }
                return await group.reduce(into: [String?]()) { $0.append($1) }
            }
            #expect(codes.filter { $0 == "00" }.count == requests.count, "\(codes.filter { $0 != "00" }.count) of \(requests.count) not answered")
        }
        #expect(arrived.load(ordering: .relaxed) == requests.count)
    }

    /// An authorization that waited for a connection of the pool past its send deadline is not
    /// sent once one frees: its body is withheld, and it fails as never sent (85, nothing to
    /// reverse). It went out late before: after another process may have taken the attempt for
    /// orphaned and settled its reversal, an approval nobody reverses.
    @Test func anAuthorizationQueuedPastItsSendDeadlineIsNotSent() async throws {
        let arrived = Atomic<Int>(0)
        let router = Router()
        router.post("/authorizations") { request, _ -> Response in
            var request = request
            _ = try await request.collectBody(upTo: 64 * 1024)  // counted once its body is in: the authorization itself
            arrived.add(1, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(800))
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"responseCode":"00","authorizationCode":"123456"}"#)))
        }
        let (first, second) = (try Self.request(), try Self.request())
        try await Self.withHost(router) { (port: Int) async throws in
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)?connections=1")!
            let holding = Task { try await adapter.authorize(first) }
            while arrived.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
            let late = await AuthorizationDeadline.$sendBy.withValue(.now + .milliseconds(200)) {
                do {
                    _ = try await adapter.authorize(second)
                    return "answered"
                } catch let error as AcquirerUnavailable {
                    return error.neverSent ? "never sent" : "unknown outcome"
                } catch {
                    return "\(error)"
                }
            }
            #expect(late == "never sent")
            #expect(try await holding.value.responseCode == "00")
        }
        #expect(arrived.load(ordering: .relaxed) == 1, "the authorization queued past its deadline reached the acquirer")
    }

    /// A redirect is not followed: it would post the clear PAN again, to wherever it points, and
    /// send the authorization twice. It is an unknown outcome.
    @Test func aRedirectIsNotFollowed() async throws {
        let elsewhere = Atomic<Int>(0)
        let listening = Atomic<Int>(0)
        let router = Router()
        router.post("/authorizations") { _, _ -> Response in
            Response(status: .temporaryRedirect, headers: [.location: "http://127.0.0.1:\(listening.load(ordering: .relaxed))/elsewhere"])
        }
        router.post("/elsewhere") { _, _ -> Response in
            elsewhere.add(1, ordering: .relaxed)
            return Response(status: .ok)
        }
        try await Self.withHost(router) { (port: Int) async throws in
            listening.store(port, ordering: .relaxed)
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)")!
            let request = try Self.request()
            await #expect(throws: AcquirerUnavailable.self) { _ = try await adapter.authorize(request) }
        }
        #expect(elsewhere.load(ordering: .relaxed) == 0, "the card was posted to the redirect's target")
    }

    /// Runs `body` with `router` served on a port of the system's choosing.
    static func withHost<Context: RequestContext>(_ router: Router<Context>, _ body: (Int) async throws -> Void) async throws
        where Context.Source == ApplicationRequestContextSource {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { continuation.yield($0.localAddress?.port ?? 0); continuation.finish() })
        let server = Task { try await app.run() }
        defer { server.cancel() }
        var port = 0
        for await bound in ports { port = bound }
        try await body(port)
    }

    /// The body is valid JSON with the card's expiry and PAN in their fields (both are written
    /// into it from their own buffers, not through a String).
    @Test func theBodyCarriesTheCardInItsFields() async throws {
        let captured = Mutex<[String: String]>([:])
        let router = Router()
        router.post("/authorizations") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 64 * 1024)
            let fields = try JSONDecoder().decode([String: AnyScalar].self, from: body)
            captured.withLock { $0 = fields.compactMapValues(\.text) }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"responseCode":"00"}"#)))
        }
        let request = try Self.request()
        try await Self.withHost(router) { (port: Int) async throws in
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)")!
            #expect(try await adapter.authorize(request).responseCode == "00")
        }
        let fields = captured.withLock { $0 }
        #expect(fields["expiry"] == request.card.expiry.description)
        #expect(fields["pan"] == SimulatorAcquirer.testCard(code: "00"))
        #expect(fields["currency"] == request.currency)
    }

    /// A reply's fields go into the store, the logs and the admin API: one that echoes the card
    /// number sent (a host's or a proxy's error; PAN stands for it here, GROUPED and DASHED for it
    /// in groups of four) is dropped, and so is
    /// anything that does not look like its field; a response code that is not two letters or
    /// digits is no answer at all. Long numbers as such are kept (an ARN has 23 digits).
    @Test(arguments: [
        (#"{"responseCode":"00","authorizationCode":"AB12 9","acquirerReference":"123456789012","message":"ok"}"#, "00", "AB12 9", "123456789012", "ok"),
        (#"{"responseCode":"00","acquirerReference":"74837265432101234567890","message":"ARN 74837265432101234567890"}"#, "00", nil,
         "74837265432101234567890", "ARN 74837265432101234567890"),
        (#"{"responseCode":"00","authorizationCode":"PAN","acquirerReference":"ref PAN","message":"card PANxyz"}"#, "00", nil, nil, nil),
        (#"{"responseCode":"00","acquirerReference":"ref GROUPED","message":"card DASHED."}"#, "00", nil, nil, nil),
        (#"{"responseCode":"05","authorizationCode":"1234567","acquirerReference":"tab\there","message":"é"}"#, "05", nil, nil, nil),
        (#"{"responseCode":"PAN"}"#, nil, nil, nil, nil),
        (#"{"responseCode":"0 "}"#, nil, nil, nil, nil),
    ] as [(String, String?, String?, String?, String?)])
    func replyFieldsAreChecked(reply: String, code: String?, authorizationCode: String?, reference: String?, message: String?) async throws {
        let router = Router()
        let pan = SimulatorAcquirer.testCard(code: "00")
        let groups = stride(from: 0, to: pan.count, by: 4).map { String(pan.dropFirst($0).prefix(4)) }
        let withCard = reply.replacingOccurrences(of: "PAN", with: pan)
            .replacingOccurrences(of: "GROUPED", with: groups.joined(separator: " "))
            .replacingOccurrences(of: "DASHED", with: groups.joined(separator: "-"))
        router.post("/authorizations") { _, _ -> Response in
            Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: withCard)))
        }
        let request = try Self.request()
        try await Self.withHost(router) { (port: Int) async throws in
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)")!
            guard let code else {
                await #expect(throws: AcquirerUnavailable.self) { _ = try await adapter.authorize(request) }
                return
            }
            let answer = try await adapter.authorize(request)
            #expect(answer.responseCode == code)
            #expect(answer.authorizationCode == authorizationCode)
            #expect(answer.acquirerReference == reference)
            #expect(answer.message == message)
        }
    }

    /// The amount a reply names reaches the pipeline (which refuses an approval of another amount
    /// than asked, and reverses it); one that is no whole number is -1, another amount, as ISO
    /// 8583's field 4 is read. (Before, the field was dropped: an approval of half the amount stood.)
    @Test(arguments: [(#"{"responseCode":"00","amount":5000}"#, 5000 as Int?), (#"{"responseCode":"00"}"#, nil),
                      (#"{"responseCode":"00","amount":null}"#, nil),
                      (#"{"responseCode":"00","amount":"5000"}"#, -1), (#"{"responseCode":"00","amount":50.5}"#, -1)])
    func theAmountAReplyNamesIsPassedOn(reply: String, amount: Int?) async throws {
        let router = Router()
        router.post("/authorizations") { _, _ -> Response in
            Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: reply)))
        }
        let request = try Self.request()
        try await Self.withHost(router) { (port: Int) async throws in
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)")!
            #expect(try await adapter.authorize(request).amount == amount)
        }
    }

    /// A reply that comes in parts (chunked, no Content-Length) is read whole (each part wiped as
    /// it is taken into one buffer, which this cannot see); one longer than 64 KiB is no answer
    /// (an unknown outcome, reversed).
    @Test(arguments: [(1, true), (63, true), (64, false), (200, false)])
    func aReplyInPartsIsReadWholeUpTo64KiB(kilobytes: Int, read: Bool) async throws {
        let router = Router()
        router.post("/authorizations") { _, _ -> Response in
            Response(status: .ok, body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: #"{"responseCode":"05","message":"x"#))
                for _ in 0..<kilobytes { try await writer.write(ByteBuffer(repeating: UInt8(ascii: "x"), count: 1024)) }
                try await writer.write(ByteBuffer(string: #""}"#))
                try await writer.finish(nil)
            })
        }
        let request = try Self.request()
        try await Self.withHost(router) { (port: Int) async throws in
            let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:\(port)")!
            if read {
                #expect(try await adapter.authorize(request).responseCode == "05")
            } else {
                let error = await #expect(throws: AcquirerUnavailable.self) { _ = try await adapter.authorize(request) }
                #expect(error?.neverSent == false)
            }
        }
    }

    /// A JSON value of the body's: its text when it is a string.
    struct AnyScalar: Decodable {
        let text: String?
        init(from decoder: any Decoder) throws {
            text = try? decoder.singleValueContainer().decode(String.self)
        }
    }

    /// A connection that cannot be made carried nothing: 85, with nothing to reverse.
    @Test func refusedConnectionIsNeverSent() async throws {
        let adapter = HTTPAcquirer(baseURL: "http://127.0.0.1:1", requestTimeout: .seconds(2))!
        let request = try Self.request()
        let error = await #expect(throws: AcquirerUnavailable.self) { _ = try await adapter.authorize(request) }
        #expect(error?.neverSent == true)
    }

    /// Only the failures that come before a connection is made say "never sent".
    @Test func onlyConnectionFailuresAreNeverSent() {
        #expect(HTTPAcquirer.failedBeforeSending(HTTPClientError.connectTimeout))
        #expect(HTTPAcquirer.failedBeforeSending(HTTPClientError.getConnectionFromPoolTimeout))
        #expect(HTTPAcquirer.failedBeforeSending(ChannelError.connectTimeout(.seconds(2))))
        for sent in [HTTPClientError.readTimeout, .deadlineExceeded, .remoteConnectionClosed, .cancelled] as [HTTPClientError] {
            #expect(!HTTPAcquirer.failedBeforeSending(sent))
        }
        #expect(!HTTPAcquirer.failedBeforeSending(ChannelError.ioOnClosedChannel))
        #expect(HTTPAcquirer.failedBeforeSending(IOError(errnoCode: ECONNREFUSED, reason: "connect")))
        #expect(!HTTPAcquirer.failedBeforeSending(IOError(errnoCode: ECONNRESET, reason: "read")))
    }
}
