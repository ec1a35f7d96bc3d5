import type { ConfigParams } from 'pip-services3-commons-nodex';

/** Configuration keys whose values are secrets: the last part of the key ends with one of these words. */
const SECRET_KEY = /(password|passphrase|secret|token|access_key|private_key)$/i;

/** What a secret is shown as. */
export const REDACTED = '***';

/**
 * A uri with the password in its user info replaced by `***` (the user name stays). A uri that
 * does not parse but has an `@` loses all of its user info.
 */
export function redactUri(uri: string): string {
    try {
        const url = new URL(uri);
        if (url.password === '') return uri;
        url.password = REDACTED;
        return url.toString();
    } catch {
        const at = uri.lastIndexOf('@');
        if (at < 0) return uri;
        const start = uri.indexOf('://');
        return `${start >= 0 && start < at ? uri.substring(0, start + 3) : ''}${REDACTED}${uri.substring(at)}`;
    }
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
