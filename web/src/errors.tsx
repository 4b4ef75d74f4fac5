// One place for the page to show what went wrong (a refused mutation, a lost session).
import { createContext, useContext } from "react";

export type ReportError = (error: unknown) => void;

export const ErrorContext = createContext<ReportError>((error) => console.error(error));

export function useReportError(): ReportError {
  return useContext(ErrorContext);
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
