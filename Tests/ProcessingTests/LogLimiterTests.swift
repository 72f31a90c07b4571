import Processing
import Testing

@Suite struct LogLimiterTests {
    @Test func aBurstPerIntervalThenACountOfWhatWasLeftOut() {
        let limiter = LogLimiter(burst: 2, per: .seconds(10))
        let start = ContinuousClock.now
        #expect(limiter.admit(now: start) == 0)
        #expect(limiter.admit(now: start + .seconds(1)) == 0)
        #expect(limiter.admit(now: start + .seconds(2)) == nil)
        #expect(limiter.admit(now: start + .seconds(9)) == nil)
        // The next interval: its first line says how many were left out.
        #expect(limiter.admit(now: start + .seconds(10)) == 2)
        #expect(limiter.admit(now: start + .seconds(11)) == 0)
        #expect(limiter.admit(now: start + .seconds(12)) == nil)
    }
}
