import type { ConfigParams } from 'pip-services3-commons-nodex';

/** Configuration keys whose values are secrets: the last part of the key ends with one of these words. */
const SECRET_KEY = /(password|passphrase|secret|token|access_key|private_key)$/i;

/** What a secret is shown as. */
const REDACTED = '***';

/**
 * A uri with the password in its user info replaced by `***` (the user name stays). A uri that
 * does not parse, or whose `@` the parser did not take as the end of user info, loses everything
 * between its scheme and its last `@`.
 */
function redactUri(uri: string): string {
    const at = uri.lastIndexOf('@');
    if (at < 0) return uri;
    let url: URL | null = null;
    try {
        url = new URL(uri);
    } catch {
        // Redacted below.
    }
    if (url !== null && url.password !== '') {
        url.password = REDACTED;
        return url.toString();
    }
    if (url !== null && url.username !== '') return uri;
    // Unparsable, or an '@' the parser did not take as the end of user info: a password holding
    // '/', '?' or '#' would otherwise show. Everything between the scheme and the last '@' goes.
    const start = uri.indexOf('://');
    return `${start >= 0 && start < at ? uri.substring(0, start + 3) : ''}${REDACTED}${uri.substring(at)}`;
}

/**
 * A configuration as a plain object for logs, `toJSON()` and `util.inspect`: secret values
 * (passwords, passphrases, secrets, tokens) replaced by `***`, and passwords removed from uris.
 */
export function redactConfig(config: ConfigParams): Record<string, string> {
    const result: Record<string, string> = {};
    for (const key of config.getKeys()) {
        const value = config.getAsString(key);
        const name = key.substring(key.lastIndexOf('.') + 1);
        if (SECRET_KEY.test(name)) result[key] = REDACTED;
        else if (/uri$/i.test(name)) result[key] = redactUri(value);
        else result[key] = value;
    }
    return result;
}
