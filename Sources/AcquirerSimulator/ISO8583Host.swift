import ISO8583
import ISO8583Acquirer
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The ISO 8583 side of the simulated acquirer: a TCP server speaking 2-byte-length-framed
/// ISO87A messages, answering 0100 with 0110, 0400/0401 with 0410 and 0800 with 0810.
public final class ISO8583Host: Sendable {
    public let host: AcquirerHost
    private let group: any EventLoopGroup
    private let logger: Logger
    private let serverChannel = Mutex<(any Channel)?>(nil)
    /// 0110 replies held for `lateReplies`, by RRN, with the channel to send them on.
    private let heldReplies = Mutex<[String: (channel: any Channel, frame: [UInt8])]>([:])
    /// Each authorization's terminal (field 41), by RRN: a reversal from another terminal does not
    /// find it (25), as a host that matches reversals by terminal and STAN would not.
    private let terminals = Mutex<[String: String]>([:])

    public init(host: AcquirerHost, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "acquirer-sim.iso8583")) {
        self.host = host
        self.group = group
        self.logger = logger
    }

    /// Starts listening; returns the port (pass 0 for any free port).
    public func start(address: String = "127.0.0.1", port: Int) async throws -> Int {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ISO8583FrameHandler())
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(server: self))
                }
            }
            .bind(host: address, port: port).get()
        serverChannel.withLock { $0 = channel }
        return channel.localAddress?.port ?? port
    }

    public func stop() async {
        let channel = serverChannel.withLock { c -> (any Channel)? in defer { c = nil }; return c }
        try? await channel?.close()
    }

    func send(_ frame: [UInt8], on channel: any Channel, after delay: Duration, twice: Bool) {
        let write: @Sendable () -> Void = {
            var buffer = channel.allocator.buffer(capacity: frame.count + 2)
            buffer.writeISO8583Frame(frame)
            channel.writeAndFlush(buffer, promise: nil)
            if twice { channel.writeAndFlush(buffer, promise: nil) }
        }
        if delay > .zero {
            channel.eventLoop.scheduleTask(in: TimeAmount(delay)) { write() }
        } else {
            channel.eventLoop.execute { write() }
        }
    }

    /// Answers one request, or holds or drops its reply as the faults say.
    func handle(_ request: ISOMessage, on channel: any Channel) {
        var reply = ISOMessage(mti: ISOMessage.responseMTI(for: request.mti) ?? "0810")
        for field in [3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49] { reply[field] = request[field] }
        switch request.mti {
        case "0800":
            reply[70] = request[70]
            reply[39] = "00"
            send(try! ISO87APackager.encode(reply), on: channel, after: .zero, twice: false)
        case "0100":
            let rrn = request[37] ?? ""
            terminals.withLock { $0[rrn] = request[41] ?? "" }
            let decision = host.authorize(rrn: rrn, panDigits: Array((request[2] ?? "").utf8))
            guard let code = decision.responseCode else { return }
            reply[39] = code
            if let authorizationCode = decision.authorizationCode { reply[38] = authorizationCode }
            guard let frame = try? ISO87APackager.encode(reply) else { return }
            if decision.late {
                heldReplies.withLock { $0[rrn] = (channel, frame) }
            } else {
                send(frame, on: channel, after: decision.delay, twice: decision.duplicate)
            }
        case "0400", "0401":
            let rrn = request[37] ?? ""
            let fromAnotherTerminal = terminals.withLock { $0[rrn].map { $0 != (request[41] ?? "") } ?? false }
            let known = !fromAnotherTerminal && host.reverse(rrn: rrn, repeat: request.mti == "0401", stan: request[11])
            reply[39] = known ? "00" : "25"
            reply[90] = nil
            guard let frame = try? ISO87APackager.encode(reply) else { return }
            send(frame, on: channel, after: host.replyDelay, twice: host.faults.duplicateReplies)
            // A held authorization reply now comes, after the reversal: the late reply.
            if let held = heldReplies.withLock({ $0.removeValue(forKey: rrn) }) {
                host.noteLateReply()
                send(held.frame, on: held.channel, after: host.replyDelay + .milliseconds(20), twice: false)
            }
        default:
            logger.warning("unsupported MTI", metadata: ["mti": "\(request.mti)"])
        }
    }
}

private final class ConnectionHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let server: ISO8583Host
    private let received = Atomic<Int>(0)

    init(server: ISO8583Host) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let count = received.add(1, ordering: .relaxed).newValue
        let resetAfter = server.host.faults.resetAfter
        if resetAfter > 0 && count >= resetAfter {
            // The fault: the connection drops with this message unanswered.
            context.close(promise: nil)
            return
        }
        guard let message = try? ISO87APackager.decode(frame.readableBytesView) else {
            context.close(promise: nil)
            return
        }
        server.handle(message, on: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
