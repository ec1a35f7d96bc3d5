import type { CompositeCounters, CompositeLogger, ILogger, LogLevel } from 'pip-services3-components-nodex';
import type { MessageEnvelope } from 'pip-services3-messaging-nodex';

// Workarounds for the pip-services3 nodex packages: typings that say `string` where null is
// passed, ConfigParams that reads a missing key as an empty string, and a Logger that formats
// every line before any level check.

/**
 * The pip-services3 typings declare correlation ids as `string`, but every method accepts
 * null (the ids are optional). These two helpers state that once, instead of casts everywhere.
 */
export function cid(correlationId: string | null | undefined): string {
    return correlationId as string;
}

/** No correlation id. */
export const NO_CID = null as unknown as string;

/** The pip-services typings say MessageEnvelope where null is returned (no message). */
export const NO_MESSAGE = null as unknown as MessageEnvelope;

/**
 * A component's logger and counters, as its parts see them: read at each use, since
 * setReferences() and unsetReferences() replace them while the parts live.
 */
export interface MqttReporting {
    readonly logger: CompositeLogger;
    readonly counters: CompositeCounters;
}

/** A reporting that reads the component's current logger and counters at each use. */
export function reportingOf(logger: () => CompositeLogger, counters: () => CompositeCounters): MqttReporting {
    return {
        get logger() { return logger(); },
        get counters() { return counters(); },
    };
}

/** A configured string, or undefined when it is missing or empty (an empty key means "not set"). */
export function nonEmpty(value: string | null | undefined): string | undefined {
    return value == null || value === '' ? undefined : value;
}

/**
 * True when a logger behind the composite logger writes messages of `level`. Pip's Logger
 * formats every message (util.format) before handing it on, even when no logger will write it
 * or there is none: on a path taken per message, check first (a trace line per queued message
 * cost 1.5 µs of formatting). When it cannot tell (a logger without getLevel(), a composite
 * logger of another shape), it answers true, so nothing is ever left unlogged.
 */
export function logsAt(logger: CompositeLogger, level: LogLevel): boolean {
    const loggers = (logger as unknown as { _loggers?: unknown })._loggers;
    if (!Array.isArray(loggers)) return true;
    for (const child of loggers as Partial<ILogger>[]) {
        if (typeof child.getLevel !== 'function' || child.getLevel() >= level) return true;
    }
    return false;
}
