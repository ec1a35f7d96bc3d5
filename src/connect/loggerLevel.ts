import type { CompositeLogger, ILogger, LogLevel } from 'pip-services3-components-nodex';

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
