/**
 * The rule for every UTF-8 string this module puts in an MQTT packet: topics, filters, the
 * client id, the user name, the will topic and MQTT 5 string properties (MQTT 3.1.1 section
 * 1.5.3, MQTT 5 section 1.5.4). Pure functions, no I/O. Internal to the package.
 *
 * The specs require well-formed UTF-8 without U+0000, and say the string SHOULD NOT hold the
 * control characters U+0001–U+001F and U+007F–U+009F or Unicode noncharacters. Brokers enforce
 * the SHOULD NOT: Mosquitto 2.0 drops the connection on any of them, in any string of any packet,
 * as malformed. So all of them are refused here, before anything is sent. JavaScript strings are
 * UTF-16: a lone surrogate has no UTF-8 form (Node would send U+FFFD instead, so the broker would
 * see another string than the caller gave), and is refused too.
 */

/** The most bytes an MQTT string or binary value may take (a two-byte length prefix). */
export const MAX_MQTT_STRING_BYTES = 65535;

/**
 * The first code unit (or pair) a string must not hold: U+0000–U+001F, U+007F–U+009F,
 * U+FDD0–U+FDEF, U+FFFE, U+FFFF, U+nFFFE and U+nFFFF of the other planes (a high surrogate whose
 * low six bits are all set, then U+DFFE or U+DFFF), and a surrogate that is not half of a pair.
 * One pass over the code units, no `u` flag: this runs for every publish.
 */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const REFUSED = /[\u0000-\u001F\u007F-\u009F\uFDD0-\uFDEF\uFFFE\uFFFF]|[\uD83F\uD87F\uD8BF\uD8FF\uD93F\uD97F\uD9BF\uD9FF\uDA3F\uDA7F\uDABF\uDAFF\uDB3F\uDB7F\uDBBF\uDBFF][\uDFFE\uDFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** How a refused code point is named in a message: `U+0001 (a control character) at index 3`. */
function describe(value: string, index: number): string {
    const unit = value.charCodeAt(index);
    const point = value.codePointAt(index) ?? unit;
    const hex = `U+${point.toString(16).toUpperCase().padStart(4, '0')}`;
    let kind: string;
    if (point === 0) kind = 'the NUL character';
    else if (point <= 0x1F || (point >= 0x7F && point <= 0x9F)) kind = 'a control character';
    else if (unit >= 0xD800 && unit <= 0xDFFF && point === unit) kind = 'a lone surrogate, which has no UTF-8 form';
    else kind = 'a Unicode noncharacter';
    return `${hex} (${kind}) at index ${index}`;
}

/**
 * Checks a string against the rule above and the length limit.
 * @returns a reason starting with "must" when the string is refused, or null.
 */
export function mqttStringProblem(value: string): string | null {
    const found = REFUSED.exec(value);
    if (found !== null) return `must not contain ${describe(value, found.index)}: MQTT strings are UTF-8 without NUL, control characters or noncharacters`;
    // A UTF-16 code unit takes at most 3 bytes in UTF-8: most strings need no byte count.
    if (value.length > MAX_MQTT_STRING_BYTES / 3 && Buffer.byteLength(value, 'utf8') > MAX_MQTT_STRING_BYTES) {
        return `must not exceed ${MAX_MQTT_STRING_BYTES} bytes of UTF-8`;
    }
    return null;
}

/** Checks MQTT binary data (a password, a will message, correlation data): its length only. */
export function mqttBinaryProblem(value: string | Buffer): string | null {
    const size = typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : value.length;
    return size > MAX_MQTT_STRING_BYTES ? `must not exceed ${MAX_MQTT_STRING_BYTES} bytes (it has ${size})` : null;
}
