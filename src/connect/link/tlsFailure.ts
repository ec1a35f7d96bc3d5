/**
 * OpenSSL's certificate verification results, as Node reports them in `err.code`
 * (see X509_verify_cert_error_string), plus the host name check.
 */
const CERTIFICATE_ERRORS: ReadonlySet<string> = new Set([
    'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_CRL', 'UNABLE_TO_DECRYPT_CERT_SIGNATURE', 'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
    'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'CERT_SIGNATURE_FAILURE', 'CRL_SIGNATURE_FAILURE', 'CERT_NOT_YET_VALID',
    'CERT_HAS_EXPIRED', 'CRL_NOT_YET_VALID', 'CRL_HAS_EXPIRED', 'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD',
    'ERROR_IN_CRL_LAST_UPDATE_FIELD', 'ERROR_IN_CRL_NEXT_UPDATE_FIELD', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_CHAIN_TOO_LONG', 'CERT_REVOKED', 'INVALID_CA',
    'PATH_LENGTH_EXCEEDED', 'INVALID_PURPOSE', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * The TLS failure an error reports, as its code (`SELF_SIGNED_CERT_IN_CHAIN`,
 * `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`, ...), or undefined when it is not a TLS failure:
 * the broker's certificate was not trusted, or either side refused the handshake.
 */
export function tlsFailureOf(err: unknown): string | undefined {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code !== 'string') return undefined;
    // EPROTO: a TLS 1.2 handshake ended by an alert (a required client certificate missing, say).
    return CERTIFICATE_ERRORS.has(code) || /^ERR_(SSL|TLS)_/.test(code) || code === 'EPROTO' ? code : undefined;
}
