import { Qlobber } from 'qlobber';

import { hasWildcards } from '../MqttTopics';

/** A registration in the router; pass it back to [[MqttTopicRouter.remove]]. */
export interface MqttRoute<T> {
    readonly filter: string;
    readonly value: T;
}

interface RouteEntry<T> extends MqttRoute<T> {
    /** A filter that starts with a wildcard never matches topics that start with `$`. */
    readonly leadingWildcard: boolean;
}

/** The routes of one exact filter, with their distinct values ready to return. */
interface ExactRoutes<T> {
    readonly routes: readonly RouteEntry<T>[];
    readonly values: readonly T[];
}

function exactRoutes<T>(routes: readonly RouteEntry<T>[]): ExactRoutes<T> {
    return { routes, values: Object.freeze(distinct(routes)) };
}

/**
 * Matches incoming topic names against MQTT topic filters: `+` matches one level (an empty one
 * too), `#` matches the rest including the parent level, and a filter that starts with a wildcard
 * does not match a topic that starts with `$` (MQTT 3.1.1 section 4.7.2).
 *
 * Exact filters are looked up in a map; wildcard filters in a trie (qlobber), so the cost of a
 * match does not grow with the number of filters that do not match. Pure, no I/O.
 *
 * A value routed through several matching filters is returned once.
 *
 * The values of an exact filter are kept as one array, made anew at each change, and match()
 * returns it as it is: no allocation per message on the common path. The result is read-only.
 */
export class MqttTopicRouter<T> {
    private readonly _exact = new Map<string, ExactRoutes<T>>();
    private readonly _wildcards = new Qlobber<RouteEntry<T>>({
        separator: '/',
        wildcard_one: '+',
        wildcard_some: '#',
        match_empty_levels: true,
        // A topic has at most 65535 bytes, so at most 65536 levels.
        max_words: 65536,
        max_wildcard_somes: 1,
    });
    /** The wildcard routes, to make remove() safe to repeat and to skip the trie when empty. */
    private readonly _wildcardRoutes = new Set<RouteEntry<T>>();
    private _size = 0;

    /** The number of routes. */
    public get size(): number {
        return this._size;
    }

    /**
     * Adds a route. The filter must be valid (see parseFilter); `$share/<group>/` must be stripped.
     */
    public add(filter: string, value: T): MqttRoute<T> {
        const entry: RouteEntry<T> = {
            filter,
            value,
            leadingWildcard: filter.startsWith('+') || filter.startsWith('#'),
        };
        if (hasWildcards(filter)) {
            this._wildcards.add(filter, entry);
            this._wildcardRoutes.add(entry);
        } else {
            const list = this._exact.get(filter);
            this._exact.set(filter, exactRoutes(list ? [...list.routes, entry] : [entry]));
        }
        this._size++;
        return entry;
    }

    /** Removes a route returned by add(). Removing it twice does nothing. */
    public remove(route: MqttRoute<T>): void {
        const entry = route as RouteEntry<T>;
        const filter = entry.filter;
        if (this._wildcardRoutes.delete(entry)) {
            this._wildcards.remove(filter, entry);
        } else {
            const list = this._exact.get(filter);
            if (!list) return;
            const i = list.routes.indexOf(entry);
            if (i < 0) return;
            if (list.routes.length === 1) this._exact.delete(filter);
            else this._exact.set(filter, exactRoutes(list.routes.filter((r) => r !== entry)));
        }
        this._size--;
    }

    /** Returns the distinct values whose filters match the topic name. */
    public match(topic: string): readonly T[] {
        const exact = this._exact.get(topic);
        if (this._wildcardRoutes.size === 0) return exact ? exact.values : NONE;
        let routes = this._wildcards.match(topic);
        if (topic.startsWith('$')) routes = routes.filter((r) => !r.leadingWildcard);
        if (routes.length === 0) return exact ? exact.values : NONE;
        if (exact) routes = routes.concat(exact.routes);
        return routes.length === 1 ? [routes[0].value] : distinct(routes);
    }
}

const NONE: readonly never[] = Object.freeze([]);

function distinct<T>(routes: readonly MqttRoute<T>[]): T[] {
    const seen = new Set<T>();
    for (const r of routes) seen.add(r.value);
    return [...seen];
}
