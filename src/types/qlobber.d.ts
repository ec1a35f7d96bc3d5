// Minimal typings for the parts of qlobber (https://www.npmjs.com/package/qlobber) we use.
declare module 'qlobber' {
    export interface QlobberOptions {
        separator?: string;
        wildcard_one?: string;
        wildcard_some?: string;
        match_empty_levels?: boolean;
        max_words?: number;
        max_wildcard_somes?: number;
    }

    export class Qlobber<V> {
        constructor(options?: QlobberOptions);
        add(topic: string, val: V): this;
        remove(topic: string, val?: V): this;
        match(topic: string): V[];
        clear(): this;
    }
}
