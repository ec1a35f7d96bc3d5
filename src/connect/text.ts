/** A configured string, or undefined when it is missing or empty (an empty key means "not set"). */
export function nonEmpty(value: string | null | undefined): string | undefined {
    return value == null || value === '' ? undefined : value;
}
