// What a type looks like once written to JSON: string enums become their string values (a
// JSON file cannot carry TypeScript enum identity, only the value), everything else is kept,
// including excess-property checks on object literals.
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;
