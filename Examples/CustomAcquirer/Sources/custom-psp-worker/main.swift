import ArgumentParser
import Foundation
import CardCrypto
import CustomAcquirer
import Hummingbird
import PSPWorker

/// The worker with our own adapter: the configuration and wiring are the worker's; only the
/// acquirer is swapped.
@main
struct CustomPSPWorker: AsyncParsableCommand {
    @Option var port = 8080
    /// Required, as `psp-worker serve`'s: the worker never picks a key itself.
    @Option var privateKey: String
    @Option var store = "data/custom.sqlite"
    @Option var limit = 1_000_000

    func run() async throws {
        // As `psp-worker serve` does: a core dump would hold the private key and the card data.
        guard ProcessHardening.disableCoreDumps() else { throw ValidationError("could not turn core dumps off") }
        // As `serve` does too: the store holds the hashes of makePaymentTokens, for the worker alone.
        umask(0o077)
        var configuration = PSPWorkerConfiguration(keys: KeyRingSource(privateKeyPath: privateKey))
        configuration.port = port
        configuration.store = .sqlite(path: store)
        configuration.adminTokenHash = try AdminToken.hash(file: nil)  // PSP_ADMIN_TOKEN
        let components = try PSPWorkerComponents.make(configuration, acquirer: LimitAcquirer(limit: limit),
                                                      logger: .init(label: "custom-psp-worker"))
        try await buildApplication(configuration: configuration, components: components).runService()
    }
}
