/**
 * MQTT topic name and topic filter rules (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7-4.8), and
 * the string rule of [[mqttStringProblem]] for both.
 * Pure functions, no I/O. Internal to the package.
 */

import { MAX_MQTT_STRING_BYTES, mqttStringProblem } from './MqttStrings';

/** The most bytes a topic or filter may take in UTF-8 (a two-byte length prefix). */
export const MAX_TOPIC_BYTES = MAX_MQTT_STRING_BYTES;

/** The parts of a subscription filter. */
export interface ParsedFilter {
    /** The filter as sent to the broker, e.g. `$share/workers/jobs/+`. */
    readonly brokerFilter: string;
    /** The filter incoming topics are matched against, e.g. `jobs/+` (no `$share/<group>/`). */
    readonly matchFilter: string;
    /** The shared-subscription group, or null. */
    readonly shareGroup: string | null;
    /** True when the filter has `+` or `#`. */
    readonly hasWildcards: boolean;
}

/** True when a filter has the wildcards `+` or `#`. */
export function hasWildcards(filter: string): boolean {
    return filter.includes('+') || filter.includes('#');
}

/**
 * Checks a topic name for PUBLISH.
 * @returns a reason when the topic is invalid, or null when it is valid.
 */
export function checkTopicName(topic: unknown): string | null {
    if (typeof topic !== 'string') return 'topic must be a string';
    if (topic.length === 0) return 'topic must not be empty';
    if (hasWildcards(topic)) return 'topic must not contain the wildcards + or #';
    const problem = mqttStringProblem(topic);
    return problem === null ? null : `topic ${problem}`;
}

function checkFilterLevels(filter: string): string | null {
    const levels = filter.split('/');
    for (let i = 0; i < levels.length; i++) {
        const level = levels[i];
        if (level.includes('#')) {
            if (level !== '#') return "'#' must occupy a whole level";
            if (i !== levels.length - 1) return "'#' must be the last level";
        } else if (level.includes('+') && level !== '+') {
            return "'+' must occupy a whole level";
        }
    }
    return null;
}

/**
 * Parses and checks a topic filter for SUBSCRIBE, including `$share/<group>/<filter>`.
 * @returns the parsed filter, or a string with the reason it is invalid.
 */
export function parseFilter(filter: unknown): ParsedFilter | string {
    if (typeof filter !== 'string') return 'filter must be a string';
    if (filter.length === 0) return 'filter must not be empty';
    const problem = mqttStringProblem(filter);
    if (problem !== null) return `filter ${problem}`;

    let matchFilter = filter;
    let shareGroup: string | null = null;
    if (filter.startsWith('$share/')) {
        const rest = filter.substring('$share/'.length);
        const slash = rest.indexOf('/');
        if (slash <= 0) return 'a shared subscription must have the form $share/<group>/<filter>';
        shareGroup = rest.substring(0, slash);
        if (hasWildcards(shareGroup)) {
            return 'a shared subscription group must not contain + or #';
        }
        matchFilter = rest.substring(slash + 1);
        if (matchFilter.length === 0) return 'a shared subscription must name a filter after the group';
    }
    const reason = checkFilterLevels(matchFilter);
    if (reason != null) return reason;
    return {
        brokerFilter: filter,
        matchFilter,
        shareGroup,
        hasWildcards: hasWildcards(matchFilter),
    };
}
