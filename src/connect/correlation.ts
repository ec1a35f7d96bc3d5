/**
 * The pip-services3 typings declare correlation ids as `string`, but every method accepts
 * null (the ids are optional). These two helpers state that once, instead of casts everywhere.
 */
export function cid(correlationId: string | null | undefined): string {
    return correlationId as string;
}

/** No correlation id. */
export const NO_CID = null as unknown as string;
