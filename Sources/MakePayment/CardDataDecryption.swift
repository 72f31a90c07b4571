import CardCrypto

extension KeyRing {
    /// Decrypts and parses a `cardData` value: the decrypt and parse steps of makePayment.
    /// The plaintext is wiped before this returns; the clear PAN lives on only inside the result.
    ///
    /// Fails with `.unableToDecrypt` (92) for anything that is not a valid cryptogram under a key of
    /// the ring or not three well-formed fields, `.invalidCardNumber` (87) for a failed Luhn check,
    /// and `.expiredCard` (86) for a card that expired before `currentMonth`.
    public func decryptCardData(_ cardData: String, currentMonth: CardExpiry, keepingSessionId: Bool = false) throws(APIError) -> CardData {
        let parsed: Result<CardData, CardDataError>
        do {
            parsed = try withDecryptedCardData(cardData) { plaintext in
                Result { () throws(CardDataError) -> CardData in try CardData.parse(plaintext, currentMonth: currentMonth, keepingSessionId: keepingSessionId) }
            }
        } catch {
            throw .unableToDecrypt
        }
        switch consume parsed {
        case .success(let card): return card
        case .failure(let error): throw error.apiError
        }
    }
}
