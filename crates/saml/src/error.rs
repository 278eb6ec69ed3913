//! Error types. Every rejection names its reason precisely so that logs and tests can tell an
//! attack class from a misconfiguration; the HTTP layer must map all of them to one generic
//! failure for the browser (never echo the details: decryption errors are an oracle).

use thiserror::Error;

/// Everything that can go wrong while handling a SAML message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SamlError {
    /// The raw message failed the structural pre-gate (before any cryptography ran).
    #[error("message rejected by the pre-gate: {0}")]
    Gate(#[from] GateViolation),
    /// The XML signature is missing, malformed or does not verify with a trusted key.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The EncryptedAssertion could not be decrypted.
    #[error("decryption: {0}")]
    Decrypt(#[from] DecryptError),
    /// The verified message violates a policy rule (issuer, audience, time window, ...).
    #[error("policy: {0}")]
    Policy(#[from] PolicyViolation),
    /// The assertion (or the request it answers) was already consumed.
    #[error("replayed assertion or request id")]
    Replay,
    /// The replay cache could not be consulted; fail closed.
    #[error("replay cache unavailable: {0}")]
    ReplayCache(String),
    /// Verification did not finish inside the time budget.
    #[error("verification exceeded its time budget")]
    Timeout,
    /// The connection is configured in a way we refuse to run with.
    #[error("configuration: {0}")]
    Config(String),
    /// A bug or a crashed worker; never caused by the message content alone.
    #[error("internal error: {0}")]
    Internal(String),
    /// Building an outgoing message (AuthnRequest, metadata, test response) failed.
    #[error("building a message failed: {0}")]
    Build(String),
}

/// Violations of the strict pre-gate, checked on the raw bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GateViolation {
    #[error("message is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("inflated message exceeds {limit} bytes or the inflate-ratio cap")]
    InflateTooLarge { limit: usize },
    #[error("invalid base64")]
    Base64,
    #[error("invalid deflate stream")]
    Deflate,
    #[error("message is not UTF-8")]
    NotUtf8,
    #[error("XML is not well-formed: {0}")]
    Malformed(String),
    #[error("DOCTYPE is not allowed")]
    Doctype,
    #[error("processing instructions are not allowed")]
    ProcessingInstruction,
    #[error("entity reference &{0}; is not allowed")]
    Entity(String),
    #[error("namespace prefix {0:?} is not bound")]
    UnboundPrefix(String),
    #[error("nesting deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error("more than {0} attributes on one element")]
    TooManyAttributes(usize),
    #[error("more than {0} namespace declarations")]
    TooManyNamespaces(usize),
    #[error("content outside the root element")]
    ContentOutsideRoot,
    #[error("root element must be {expected}")]
    WrongRoot { expected: &'static str },
    #[error("expected exactly one Assertion or EncryptedAssertion as a direct child, found {0}")]
    AssertionCount(usize),
    #[error("an assertion appears outside its allowed position")]
    NestedAssertion,
    #[error("a Signature appears outside its allowed position")]
    MisplacedSignature,
    #[error("more than one Signature on one element")]
    DuplicateSignature,
    #[error("no signature on the Response or the Assertion")]
    Unsigned,
    #[error("missing or invalid ID attribute on {0}")]
    BadId(&'static str),
    #[error("duplicate ID {0:?}")]
    DuplicateId(String),
    #[error("signature structure: {0}")]
    SignatureStructure(String),
    #[error("algorithm not allowed: {0}")]
    Algorithm(String),
    #[error("transform not allowed: {0}")]
    Transform(String),
    #[error("reference URI {found:?} must be \"#{expected}\"")]
    ReferenceUri { found: String, expected: String },
    #[error("comment inside signature data")]
    CommentInSignature,
    #[error("RelayState is too long or contains control characters")]
    RelayState,
}

/// Failures of the cryptographic signature check.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the connection has no trusted IdP signing certificate")]
    NoTrustedCertificate,
    #[error("signature does not verify with any trusted certificate: {0}")]
    Invalid(String),
    #[error("verified bytes are not the element the gate approved")]
    VerifiedElementMismatch,
    #[error("the decrypted assertion is not signed and the response is not signed either")]
    UnsignedEncryptedAssertion,
}

/// Failures while decrypting an EncryptedAssertion.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecryptError {
    #[error("the connection has no SP decryption key")]
    NoDecryptionKey,
    #[error("malformed EncryptedAssertion: {0}")]
    Structure(String),
    #[error("key transport algorithm not allowed: {0}")]
    KeyTransport(String),
    #[error("data encryption algorithm not allowed: {0}")]
    DataAlgorithm(String),
    #[error("no configured key could unwrap the content key")]
    KeyUnwrap,
    #[error("ciphertext is too short")]
    ShortCiphertext,
    #[error("content decryption failed")]
    Content,
}

/// Policy rules applied to verified content only.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyViolation {
    #[error("Issuer does not match the IdP entity id")]
    IssuerMismatch,
    #[error("Issuer missing from the assertion")]
    MissingIssuer,
    #[error("Status is not Success: {0}")]
    Status(String),
    #[error("Destination does not match our ACS URL")]
    DestinationMismatch,
    #[error("Destination is required on a signed Response")]
    MissingDestination,
    #[error("no bearer SubjectConfirmation")]
    NoBearerConfirmation,
    #[error("SubjectConfirmationData Recipient does not match our ACS URL")]
    RecipientMismatch,
    #[error("SubjectConfirmationData has no NotOnOrAfter")]
    MissingConfirmationExpiry,
    #[error("SubjectConfirmationData expired")]
    ConfirmationExpired,
    #[error("SubjectConfirmationData not yet valid")]
    ConfirmationNotYetValid,
    #[error("no Conditions/AudienceRestriction")]
    MissingAudienceRestriction,
    #[error("AudienceRestriction does not contain our SP entity id")]
    AudienceMismatch,
    #[error("assertion not yet valid (NotBefore)")]
    NotYetValid,
    #[error("assertion expired (NotOnOrAfter)")]
    Expired,
    #[error("IssueInstant is in the future")]
    IssueInstantInFuture,
    #[error("IssueInstant is too old")]
    IssueInstantTooOld,
    #[error("InResponseTo does not match the request we issued")]
    InResponseToMismatch,
    #[error("InResponseTo is missing for an SP-initiated login")]
    MissingInResponseTo,
    #[error("unsolicited response carries an InResponseTo")]
    UnexpectedInResponseTo,
    #[error("IdP-initiated login is disabled for this connection")]
    IdpInitiatedDisabled,
    #[error("Subject has no NameID")]
    MissingNameId,
    #[error("required field {0} missing or invalid")]
    Invalid(&'static str),
}
