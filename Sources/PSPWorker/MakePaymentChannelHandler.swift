import Foundation
import HTTPTypes
import MakePayment
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Processing
import Synchronization

/// Serves `POST <makePaymentPath>` straight from the connection's channel pipeline, ahead of
/// Hummingbird's router, and hands every other request on to it. makePayment is the one call on
/// the hot path: here it skips the router, the request and response types and the async stream
/// between the event loop and the handler task, and its front (parse, payment, token, merchant,
/// idempotency) runs on the event loop at once (`Task.immediate`) until it waits for a worker.
///
/// One request at a time per connection, as HTTP/1.1 answers them: parts that arrive while an
/// answer is outstanding (ours, or Hummingbird's for a request handed on) wait in a small backlog;
/// while it is full, the connection is not read (the answer owed is never dropped for it).
/// `Expect: 100-continue` is answered 100 before the body is read (not for HTTP/1.0: `HTTP1RequestHeadChecks`).
/// On graceful shutdown the quiesce event is held until our answer is written, so a makePayment in
/// flight is answered before the connection closes.
final class MakePaymentChannelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The endpoint's work: the body, the Authorization header and when the request's head came
    /// in (Vipps's patience counts from its sending, not from the body's end), the answer out.
    typealias Serve = @Sendable (ByteBuffer, String?, ContinuousClock.Instant) async -> MakePaymentResult
    /// Counts an answer given here without `serve` (a body over the limit), as `serve` counts its own.
    typealias Record = @Sendable (MakePaymentResult) -> Void

    private enum State {
        case idle
        /// Reading a makePayment body (`tooLarge`: past the limit; the rest is dropped and 400 answered).
        case collecting(body: ByteBuffer, authorization: String?, receivedAt: ContinuousClock.Instant, closeAfter: Bool, tooLarge: Bool)
        /// Our answer is being made.
        case answering
        /// A request handed on to Hummingbird: still being read, and/or its answer not yet written.
        case handedOn(reading: Bool, answered: Bool)
    }

    private let path: String
    private let maxBodyBytes: Int
    private let serve: Serve
    private let record: Record
    /// Set when the endpoint's task should stay on this connection's event loop after it waits
    /// (the workers run on the event loops too): the answer is then written without a hop.
    private let staysOnEventLoop: Bool
    private var executor: EventLoopTaskExecutor?
    private var state = State.idle
    /// Parts that came while an answer was owed; a head with the time it came (a makePayment
    /// pipelined behind a slow one has been waiting for its answer since then).
    private var backlog = CircularBuffer<(part: HTTPRequestPart, arrivedAt: ContinuousClock.Instant?)>()
    private var closeAfterAnswer = false
    /// The request handed on asked to close the connection after its answer.
    private var handedOnCloses = false
    private var quiesceHeld = false
    /// Past this many parts waiting behind an outstanding answer, the socket is not read until
    /// the backlog drains (what one read already brought in is still taken). While the channel is
    /// not writable (its client does not read what it was sent), nothing new is started and the
    /// parts wait here too: answers that need no wait (a 400, a 401, a recorded outcome) would
    /// otherwise pile up in the outbound buffer without bound.
    private let backlogLimit = 64
    /// A read the channel asked for while the backlog was full, passed on once it drains.
    private var readHeld = false
    /// An answer that closes the connection is being written.
    private var closing = false
    /// The Date header's text, made once a second.
    private var date = HTTPDate()
    /// Shutdown began with no makePayment of ours under way (Hummingbird finishes its request and
    /// closes): no new request is started, since its answer could not be written before the close.
    private var quiescing = false
    /// The client closed its side (a half-close) while answers were owed: the event is passed on,
    /// and the connection closed, once every request it sent is answered.
    private var inputClosedHeld = false
    /// At shutdown, how long a body still coming may take before its connection is closed.
    static let unfinishedBodyGrace = TimeAmount.seconds(5)
    /// How long an answer that closes the connection may take to be written out (to a client that
    /// reads): past it, the connection is closed with the answer unsent.
    static let closingGrace = TimeAmount.seconds(10)
    /// How long a makePayment's body may take to arrive in full once its request is being
    /// served (its head read, or taken from the backlog): past it the connection is closed
    /// (nothing was started), however steadily the body trickles in. Vipps sends a few hundred bytes at once; a client that
    /// announces a body and stalls would otherwise hold the connection and its buffer for ever.
    static let bodyTimeout = TimeAmount.seconds(10)
    /// Counts the requests read, so that a body timer knows whether its request is still the one
    /// being collected.
    private var requestsRead = 0
    private var bodyTimerArmed = false
    /// The body timer of the request being collected: cancelled once its body is in, so that a
    /// timer does not hold the handler and its channel for 10 s after every such request.
    private var bodyTimer: Scheduled<Void>?
    /// How long the connection may wait for its client: idle since its last answer (a request
    /// head that never completes included), or since the head of a request handed on to
    /// Hummingbird that is not yet read in full. Past it the connection is closed, so that idle or
    /// stalled connections cannot pile up (nothing else closes them: Hummingbird's idle handler
    /// sits behind this one and sees no makePayment). Longer than the idle time of common client
    /// pools (60 s: AsyncHTTPClient's, nginx's 75 s), so that a client reusing a connection rarely
    /// meets the close.
    static let clientWaitTimeout = TimeAmount.seconds(120)
    /// When the current wait for the client began (`clientWaitTimeout`).
    private var waitingSince = NIODeadline.uptimeNanoseconds(0)
    /// One timer per connection, rescheduled as it fires, rather than one per request.
    private var clientWaitTimer: Scheduled<Void>?
    /// A `drainBacklog` is under way: an answer given while it starts the next request (one that
    /// needs no wait: a 404, a 401, a recorded outcome) leaves the rest of the backlog to it
    /// instead of draining it again from within (pipelined requests would nest the calls, one
    /// level each, and thousands of them would overflow the event loop's stack).
    private var draining = false

    /// Bytes of earlier answers the channel still holds, not yet taken by its socket (a client
    /// slow to read), asked at shutdown; a test's channel stands in for a socket's here.
    private let unsentBytes: (any Channel) -> Int

    init(path: String, maxBodyBytes: Int, staysOnEventLoop: Bool = false, record: @escaping Record = { _ in },
         unsentBytes: @escaping (any Channel) -> Int = MakePaymentChannelHandler.bufferedBytes, serve: @escaping Serve) {
        self.path = path
        self.maxBodyBytes = maxBodyBytes
        self.staysOnEventLoop = staysOnEventLoop
        self.record = record
        self.unsentBytes = unsentBytes
        self.serve = serve
    }

    /// What a socket channel holds unwritten (0 where the channel cannot say).
    static func bufferedBytes(_ channel: any Channel) -> Int {
        (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if staysOnEventLoop { executor = EventLoopTaskExecutor(context.eventLoop) }
        if context.channel.isActive { armClientWaitTimer(context: context) }
        // Hummingbird adds its channel handlers after the conversion to HTTPTypes, which drops
        // the request's version: the checks that need it go in ahead of it from here.
        let pipeline = context.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) {
            try? pipeline.addHandler(HTTP1RequestHeadChecks(), position: .before(codec))
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        armClientWaitTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
    }

    private func cancelTimers() {
        clientWaitTimer?.cancel()
        clientWaitTimer = nil
        cancelBodyTimer()
    }

    private func cancelBodyTimer() {
        bodyTimer?.cancel()
        bodyTimer = nil
    }

    /// Starts the connection's client-wait timer (once).
    private func armClientWaitTimer(context: ChannelHandlerContext) {
        guard clientWaitTimer == nil else { return }
        waitingSince = context.eventLoop.now
        scheduleClientWaitCheck(at: waitingSince + Self.clientWaitTimeout, context: context)
    }

    private func scheduleClientWaitCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        clientWaitTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.handler.checkClientWait(context: bound.value.context)
        }
    }

    /// Closes the connection if it has waited for its client past the timeout; otherwise checks
    /// again when it could next be due. While an answer is owed (or a makePayment's body is
    /// coming, which has a timer of its own) the wait is ours, not the client's.
    private func checkClientWait(context: ChannelHandlerContext) {
        guard !closing, context.channel.isActive else { clientWaitTimer = nil; return }
        var clientsTurn: Bool
        switch state {
        case .idle: clientsTurn = backlog.isEmpty
        case .handedOn(let reading, _): clientsTurn = reading
        case .collecting, .answering: clientsTurn = false
        }
        // Answers it does not read: the wait is the client's, whatever is owed.
        if !context.channel.isWritable { clientsTurn = true }
        let now = context.eventLoop.now
        let due = (clientsTurn ? waitingSince : now) + Self.clientWaitTimeout
        if clientsTurn && due <= now {
            clientWaitTimer = nil
            backlog.removeAll()
            closing = true
            context.close(promise: nil)
            return
        }
        scheduleClientWaitCheck(at: due, context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After an answer that closes the connection, what else comes is not read (handling it
        // could close the channel before that answer is out).
        guard !closing else { return }
        let part = unwrapInboundIn(data)
        // After the quiesce, only the rest of the request Hummingbird is reading goes on.
        if quiescing, !Self.isReading(state) { return }
        if backlog.isEmpty && context.channel.isWritable && accepts(part) {
            handle(part, arrivedAt: nil, context: context)
        } else if case .head = part {
            backlog.append((part, ContinuousClock.now))
        } else {
            backlog.append((part, nil))
        }
    }

    /// A read burst is over: a body still incomplete gets its timer (armed here, not per request:
    /// a body that comes in the head's burst, as Vipps's does, costs no timer).
    func channelReadComplete(context: ChannelHandlerContext) {
        armBodyTimerIfCollecting(context: context)
        context.fireChannelReadComplete()
    }

    /// Arms the body timer of the request being collected, once per request. Called at each
    /// read-complete and after the backlog drains: a request started from the backlog (its head
    /// read while an earlier answer was owed) sees no read-complete of its own if its client stalls.
    private func armBodyTimerIfCollecting(context: ChannelHandlerContext) {
        guard case .collecting = state, !bodyTimerArmed else { return }
        bodyTimerArmed = true
        let request = requestsRead
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        bodyTimer = context.eventLoop.scheduleTask(in: Self.bodyTimeout) {
            let (handler, context) = bound.value
            handler.bodyTimer = nil
            guard case .collecting = handler.state, handler.requestsRead == request else { return }
            handler.backlog.removeAll()
            handler.closing = true
            context.close(promise: nil)
        }
    }

    func read(context: ChannelHandlerContext) {
        if backlog.count >= backlogLimit || !context.channel.isWritable {
            readHeld = true
        } else {
            context.read()
        }
    }

    /// Writable again (the client read what it was sent): what waits is started, and a read held
    /// is passed on. Not writable: the client's turn, timed as its wait (`clientWaitTimeout`).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            drainBacklog(context: context)
        } else {
            waitingSince = context.eventLoop.now
        }
        context.fireChannelWritabilityChanged()
    }

    /// Whether `part` can be handled now rather than wait for an outstanding answer.
    private func accepts(_ part: HTTPRequestPart) -> Bool {
        switch state {
        case .idle, .collecting: return true
        case .handedOn(let reading, _): return reading
        case .answering: return false
        }
    }

    /// `arrivedAt`: when a head taken from the backlog came; nil for a part read just now.
    private func handle(_ part: HTTPRequestPart, arrivedAt: ContinuousClock.Instant?, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            if head.method == .post, let target = Self.path(of: head), target == path {
                if let expect = head.headerFields[.expect], expect.lowercased() == "100-continue" {
                    // A body already known to be over the limit is refused before it is sent.
                    if (head.headerFields[.contentLength].flatMap { Int($0) } ?? 0) > maxBodyBytes {
                        state = .answering
                        closeAfterAnswer = true
                        refuseTooLarge(context: context)
                        return
                    }
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
                }
                requestsRead += 1
                bodyTimerArmed = false
                state = .collecting(body: context.channel.allocator.buffer(capacity: 0), authorization: head.headerFields.soleAuthorization,
                                    receivedAt: arrivedAt ?? .now, closeAfter: Self.asksToClose(head), tooLarge: false)
            } else {
                state = .handedOn(reading: true, answered: false)
                handedOnCloses = Self.asksToClose(head)
                waitingSince = context.eventLoop.now
                context.fireChannelRead(wrapInboundOut(part))
            }
        case (.collecting(var body, let authorization, let receivedAt, let closeAfter, var tooLarge), .body(var chunk)):
            state = .answering  // (no copy-on-write of `body` while it is taken out)
            if !tooLarge {
                if body.readableBytes + chunk.readableBytes > maxBodyBytes {
                    tooLarge = true
                    body.clear()
                } else if body.readableBytes == 0 {
                    body = chunk
                } else {
                    body.writeBuffer(&chunk)
                }
            }
            state = .collecting(body: body, authorization: authorization, receivedAt: receivedAt, closeAfter: closeAfter, tooLarge: tooLarge)
        case (.collecting(let body, let authorization, let receivedAt, let closeAfter, let tooLarge), .end):
            state = .answering
            cancelBodyTimer()
            closeAfterAnswer = closeAfter
            if tooLarge {
                refuseTooLarge(context: context)
            } else {
                start(body: body, authorization: authorization, receivedAt: receivedAt, context: context)
            }
        case (.handedOn(true, let answered), .end):
            state = answered ? .idle : .handedOn(reading: false, answered: false)
            context.fireChannelRead(wrapInboundOut(part))
            if answered { drainBacklog(context: context) }
        case (.handedOn(true, _), _):
            context.fireChannelRead(wrapInboundOut(part))
        default:
            // Out of order (a body without a head): the codec would not let this happen.
            context.close(promise: nil)
        }
    }

    /// Runs the endpoint; its front runs here on the event loop until the first wait.
    private func start(body: ByteBuffer, authorization: String?, receivedAt: ContinuousClock.Instant, context: ChannelHandlerContext) {
        let serve = self.serve
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: eventLoop)
        Task.immediate(executorPreference: executor) {
            let result = await serve(body, authorization, receivedAt)
            if eventLoop.inEventLoop {
                bound.value.handler.answer(result, context: bound.value.context)
            } else {
                eventLoop.execute { bound.value.handler.answer(result, context: bound.value.context) }
            }
        }
    }

    /// A body over the limit: 400 with 71 (the API has no 413), counted like the answers `serve` gives.
    private func refuseTooLarge(context: ChannelHandlerContext) {
        let tooLarge = MakePaymentPipeline.invalidRequest("")
        record(tooLarge)
        answer(tooLarge, context: context)
    }

    private func answer(_ result: MakePaymentResult, context: ChannelHandlerContext) {
        var head = HTTPResponse(status: .init(code: result.httpStatus))
        var json = context.channel.allocator.buffer(capacity: 192).readableBytesView
        result.response.appendJSON(to: &json)
        let body = ByteBuffer(json)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.date] = date.now()
        head.headerFields[.server] = "psp-worker"
        // A 401 names the scheme it wants (RFC 9110 §11.6.1): Vipps's makePaymentToken, sent bare.
        if result.httpStatus == 401 { head.headerFields[.wwwAuthenticate] = Self.makePaymentChallenge }
        // After a half-close, the last request's answer closes the connection (nothing more can come).
        let close = closeAfterAnswer || quiesceHeld || (inputClosedHeld && backlog.isEmpty)
        if close { head.headerFields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        state = .idle
        waitingSince = context.eventLoop.now
        closeAfterAnswer = false
        guard close else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            drainBacklog(context: context)
            passOnInputClosedIfAnswered(context: context)
            return
        }
        backlog.removeAll()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: closeOnceWritten(context: context))
    }

    /// A promise for the last write of an answer that closes the connection: the connection is
    /// closed once that answer is out, not before (a close fails writes still pending), and
    /// `closingGrace` after it was queued at the latest (a client that reads nothing would
    /// otherwise hold it, and a graceful shutdown, for ever: errors and the quiesce stop here
    /// while `closing`).
    private func closeOnceWritten(context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        closing = true
        let channel = context.channel
        let written = context.eventLoop.makePromise(of: Void.self)
        let grace = context.eventLoop.scheduleTask(in: Self.closingGrace) { channel.close(promise: nil) }
        written.futureResult.whenComplete { _ in
            grace.cancel()
            channel.close(promise: nil)
        }
        return written
    }

    /// The challenge of a makePayment refused 401: the Authorization header carries the payment's
    /// makePaymentToken as it is, with no scheme word before it, so the challenge names none of
    /// the registered schemes.
    static let makePaymentChallenge = #"makePaymentToken realm="makePayment""#


    /// A request handed on whose parts are still coming.
    private static func isReading(_ state: State) -> Bool {
        if case .handedOn(true, _) = state { return true }
        return false
    }

    private func drainBacklog(context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        defer { draining = false }
        // Shutting down: what waits would be started only to be cut off by Hummingbird's close
        // (a makePayment authorized, its answer lost). Never started, it is retried elsewhere.
        if quiescing { backlog.removeAll() }
        var handed = false
        while let next = backlog.first, context.channel.isWritable, accepts(next.part) {
            backlog.removeFirst()
            if case .handedOn = state { handed = true }
            handle(next.part, arrivedAt: next.arrivedAt, context: context)
            if case .handedOn = state { handed = true }
        }
        // Hummingbird's async channel passes reads on at a read-complete, which a backlog
        // drained outside a read would never see.
        if handed { context.fireChannelReadComplete() }
        armBodyTimerIfCollecting(context: context)
        if readHeld && backlog.count < backlogLimit && context.channel.isWritable {
            readHeld = false
            context.read()
        }
    }

    /// Hummingbird's answer to a request handed on: once its end is written, the next may start.
    /// The answer to a request that asked to close says so, and the connection is closed once it
    /// is out: nothing pipelined behind it is started, since its answer could not be written
    /// (Hummingbird closes only on a header of exactly `close`, and without saying so).
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if handedOnCloses, case .handedOn = state {
            switch unwrapOutboundIn(data) {
            case .head(var head) where head.status.kind != .informational:
                head.headerFields[.connection] = "close"
                context.write(wrapOutboundOut(.head(head)), promise: promise)
                return
            case .end:
                backlog.removeAll()
                let written = closeOnceWritten(context: context)
                if let promise { written.futureResult.cascade(to: promise) }
                context.write(data, promise: written)
                return
            default:
                break
            }
        }
        context.write(data, promise: promise)
        guard case .end = unwrapOutboundIn(data), case .handedOn(let reading, _) = state else { return }
        if reading {
            state = .handedOn(reading: true, answered: true)
        } else {
            state = .idle
            waitingSince = context.eventLoop.now
            drainBacklog(context: context)
            passOnInputClosedIfAnswered(context: context)
        }
    }

    /// After a half-close held back: once no answer is owed any more (a request left incomplete
    /// will never be), the event goes on to Hummingbird, which closes the connection.
    private func passOnInputClosedIfAnswered(context: ChannelHandlerContext) {
        guard inputClosedHeld, backlog.isEmpty else { return }
        switch state {
        case .answering, .handedOn: return  // an answer is still to come; this runs again after it
        case .idle, .collecting:
            inputClosedHeld = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    /// A request the decoder could not parse. Behind a makePayment being answered, Hummingbird
    /// would answer it 400 at once, ahead of ours, and the client would take that for the
    /// makePayment's answer: ours goes out first and closes the connection (requests pipelined
    /// in between were never started, so nothing of theirs is lost). A makePayment whose own body
    /// is malformed (a bad chunk) is answered 400 (71) and the connection closed. Behind a request
    /// handed on, with others waiting between, the connection closes after Hummingbird's answer.
    /// Otherwise Hummingbird answers it 400 and closes.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Closing after an answer of ours still being written: the decoder reports every read
        // after its first error, and Hummingbird, told, would close the channel under that answer.
        guard !closing else { return }
        // The connection closes after the answer Hummingbird is giving: a 400 behind it would
        // only race that close (and the decoder reports every read after its first error). Not
        // while its request is still being read: the error may be that request's own.
        if handedOnCloses, case .handedOn(reading: false, _) = state {
            backlog.removeAll()
            return
        }
        switch state {
        case .answering:
            closeAfterAnswer = true
            closing = true
            backlog.removeAll()
        case .collecting:
            state = .answering
            closeAfterAnswer = true
            backlog.removeAll()
            cancelBodyTimer()
            let invalid = MakePaymentPipeline.invalidRequest("")
            record(invalid)
            answer(invalid, context: context)
        case .handedOn(reading: false, _) where !backlog.isEmpty:
            // Requests wait behind the one Hummingbird answers: its 400 would come next and be
            // taken for the first of them (a makePayment told 400, never started). None of them
            // is started; the connection closes once Hummingbird's answer is out, and they are
            // retried.
            backlog.removeAll()
            handedOnCloses = true
        case .idle, .handedOn:
            // Hummingbird answers it 400 right after its answer to the request it holds, and then
            // stops reading. What waits in the backlog (answers not read by the client) must not
            // start when that earlier answer is written (`drainBacklog`). Never started, it is retried.
            backlog.removeAll()
            context.fireErrorCaught(error)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // Closing already, once our last answer is out: Hummingbird would close under it.
            if closing { return }
            // A half-close: Hummingbird would close the connection at once, with our answer still
            // owed (the payment processed, its answer lost). Held until it is answered.
            if case .answering = state { inputClosedHeld = true; return }
            if !backlog.isEmpty { inputClosedHeld = true; return }
        }
        if event is ChannelShouldQuiesceEvent {
            // Closing already, once our last answer is out: Hummingbird would close at once.
            if closing { return }
            switch state {
            case .collecting:
                // A body still coming: answered and closed if it completes, but a client that
                // stopped sending halfway must not hold the shutdown for ever. Not closed at once:
                // an earlier answer may still be on its way out, and a close fails pending writes.
                quiesceHeld = true
                let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: Self.unfinishedBodyGrace) {
                    guard case .collecting = bound.value.handler.state else { return }
                    bound.value.handler.backlog.removeAll()
                    bound.value.context.close(promise: nil)
                }
                return
            case .answering:
                // Ours is in flight: close after answering it.
                quiesceHeld = true
                return
            case .idle:
                backlog.removeAll()
                quiescing = true
                // An answer may still be on its way out (its client slow to read): Hummingbird
                // would close at once, and a close fails the writes still pending (the outcome
                // stands in the store, but the answer is lost). The output is closed instead,
                // which NIO does once they are written; then the connection, `closingGrace` at
                // the latest.
                if unsentBytes(context.channel) > 0 {
                    context.close(mode: .output, promise: closeOnceWritten(context: context))
                    return
                }
            case .handedOn:
                backlog.removeAll()
                quiescing = true
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Whether the request asks that its connection close after the answer (`Connection: close`,
    /// in any case; HTTP/1.0 without keep-alive is marked so by `HTTP1RequestHeadChecks`).
    static func asksToClose(_ head: HTTPRequest) -> Bool {
        guard let value = head.headerFields[.connection] else { return false }
        // Compared in place, ASCII letters folded: `lowercased()` made a String for every request.
        let bytes = value.utf8, close = "close".utf8
        var start = bytes.startIndex
        while bytes.distance(from: start, to: bytes.endIndex) >= close.count {
            if zip(bytes[start...], close).allSatisfy({ $0 | 0x20 == $1 }) { return true }
            start = bytes.index(after: start)
        }
        return false
    }

    /// The path of a request target, without its query.
    static func path(of head: HTTPRequest) -> Substring? {
        guard let target = head.path else { return nil }
        return target[..<(target.firstIndex(of: "?") ?? target.endIndex)]
    }
}

/// Checks and completes a request's head before the conversion to HTTPTypes drops its version.
///
/// - Host (RFC 9112 §3.2): an HTTP/1.1 request without one, or any request with more than one or
///   with a value no host has, is refused 400 and the connection closed, as for a head the decoder could not parse (the error
///   goes down the pipeline as `HTTPParserError.invalidHeaderToken`, which Hummingbird answers 400 as it does any `HTTPParserError`; what the client sends after it is
///   not read).
/// - HTTP/1.0: without keep-alive, `Connection: close` (HTTP/1.0 does not keep a connection by
///   default; treated as HTTP/1.1, it was answered and then kept open for a request that never
///   comes), and no `Expect` (a server must not send an HTTP/1.0 client 100 Continue, RFC 9110
///   §10.1.1). Our endpoint and Hummingbird's routes then close after the answer.
final class HTTP1RequestHeadChecks: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// A head was refused: nothing more from this connection is passed on.
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        // Counted in place: `headers["host"]` would build an array for every request.
        var hosts = 0, valid = true
        for (name, value) in head.headers where Self.isHost(name) {
            hosts += 1
            valid = valid && Self.isHostValue(value)
        }
        if hosts > 1 || (hosts == 0 && head.version != .http1_0) || !valid {
            refused = true
            context.fireErrorCaught(HTTPParserError.invalidHeaderToken)
            return
        }
        guard head.version == .http1_0 else {
            context.fireChannelRead(data)
            return
        }
        if !head.isKeepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
        head.headers.remove(name: "expect")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// Whether a field's name is Host, in any case.
    static func isHost(_ name: String) -> Bool {
        name.utf8.count == 4 && name.utf8.elementsEqual("host".utf8) { $0 | 0x20 == $1 }
    }

    /// `uri-host [":" port]` (RFC 9110 §7.2; empty is allowed): the characters of a reg-name, an
    /// IPv4 address or an IP literal in brackets, and the port's colon. Not a full parse: what it
    /// refuses (spaces, `/ ? # @`, controls, bytes past ASCII) can be no host.
    static func isHostValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            default:
                return "-._~%!$&'()*+,;=:[]".utf8.contains(byte)
            }
        }
    }
}

/// The Date header's IMF-fixdate. Formatted once a second for the whole process (`shared`), and
/// remembered by each connection, on its event loop: the shared lock is taken once per connection
/// per second, not by every answer, and the text is made once a second, not once per connection.
struct HTTPDate {
    private static let shared = Mutex<(second: Int, text: String)>((-1, ""))
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        if time.tv_sec == second { return text }
        let now = time.tv_sec
        second = now
        text = Self.shared.withLock { cached in
            if cached.second != now { cached = (now, Self.format(now)) }
            return cached.text
        }
        return text
    }

    /// IMF-fixdate (RFC 9110 §5.6.7) of a second since 1970.
    static func format(_ second: Int) -> String {
        var t = second
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(1900 + parts.tm_year) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}

extension HTTPFields {
    /// The one Authorization field, for makePayment's token and the admin API's bearer token
    /// alike. Two or more are no credential (the subscript joins repeated fields with ", ", and
    /// two lines must not spell a token that contains one): nil, so 401.
    var soleAuthorization: String? {
        var found: String?
        for field in self where field.name == .authorization {
            guard found == nil else { return nil }
            found = field.value
        }
        return found
    }
}
